"""The experiment records in data/t2v/experiments: every curve has its command, config and commit, and the README names it.

The curves back the Experiments tables of data/t2v/README.md and the plots of notebook 05; a
curve without the command that made it, or a record that disagrees with its curve, is not a result.
"""

import csv
import json

import pytest

from vdlearn.io import data_dir

FOLDER = data_dir() / "t2v" / "experiments"
RECORDS = json.loads((FOLDER / "runs.json").read_text())["runs"] if (FOLDER / "runs.json").exists() else {}
CURVES = sorted(p.name for p in FOLDER.glob("*.csv"))


def test_the_records_are_there():
    assert CURVES, f"no experiment curves in {FOLDER}"
    assert sorted(RECORDS) == [c for c in CURVES if c in RECORDS]


@pytest.mark.parametrize("name", [c for c in CURVES if c in RECORDS])
def test_a_record_matches_its_curve_and_says_how_it_was_made(name):
    record = RECORDS[name]
    assert record["command"]  # the command, or where the README gives the snippet that ran
    rows = list(csv.DictReader((FOLDER / name).open()))
    curve = record["metrics"]["adherence_curve"]
    assert [float(r["step"]) for r in rows] == [c["step"] for c in curve]
    assert [float(r["joint"]) for r in rows] == [c["joint"] for c in curve]
    assert name in (FOLDER.parent / "README.md").read_text()


def test_every_record_names_the_tracker_that_measured_it():
    """The tracker changed at commit 25b0f43 (data/t2v/README.md, "The tracker and slow clips at 16 fps"):
    each record says whether its figures went through the tracker before or after the change."""
    for name, record in RECORDS.items():
        assert "25b0f43" in record.get("tracker", ""), name
        again = record["metrics"].get("remeasured")
        if again is not None:  # measured again through the fixed tracker: the same prompts and seeds
            assert again["eval"]["settings"] == record["metrics"]["eval"]["settings"], name
            assert again["command"].startswith("vdlearn eval"), name
