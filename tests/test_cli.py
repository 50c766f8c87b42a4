"""The vdlearn command line, run as a user would run it."""

import json
import subprocess
import sys

import pytest


def run(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "vdlearn", *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"vdlearn {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("sub", [[], ["world"], ["judge"], ["train"], ["train", "judges"]])
def test_help_explains_every_command(sub):
    out = run(*sub, "--help").stdout
    assert "usage: vdlearn" in out
    if sub == ["judge"]:
        assert "--prompt" in out and "adherence" in out
    if sub == ["world"]:
        assert "--regime" in out and "heldout" in out


def test_world_then_judge_round_trip(tmp_path):
    out = run("world", "--n", "6", "--out", str(tmp_path), "--split", "test").stdout
    assert "wrote 6 files" in out
    records = json.loads((tmp_path / "captions.json").read_text())
    files = [str(tmp_path / r["file"]) for r in records]
    assert all(f.endswith(".gif") for f in files)
    report = json.loads(run("judge", *files, "--captions", str(tmp_path / "captions.json"), "--json").stdout)
    assert report["summary"]["adherence"]["n"] == 6
    assert report["summary"]["adherence"]["joint"] >= 5 / 6
    # the same clips judged against a wrong prompt mostly miss
    wrong = json.loads(run("judge", *files, "--prompt", "a white star moving up slowly", "--json").stdout)
    assert wrong["summary"]["adherence"]["joint"] <= 1 / 6


def test_judge_says_what_is_wrong_with_a_prompt(tmp_path):
    run("world", "--n", "1", "--out", str(tmp_path))
    f = next(tmp_path.glob("*.gif"))
    bad = run("judge", str(f), "--prompt", "a purple 3 moving left", check=False)
    assert bad.returncode != 0 and "vocabulary" in bad.stderr
