"""Every notebook follows the course's shape (nbval, run by the same pytest command, executes them)."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def committed_version(path: Path) -> dict | None:
    """The notebook as git would commit it (the staged version), or None outside a git checkout.

    A learner's working copy holds outputs once the lab autosaves; only what reaches a commit
    must be stripped (``make setup`` installs nbstripout as a git filter, so staging strips them).
    """
    rel = path.relative_to(ROOT).as_posix()
    try:
        shown = subprocess.run(["git", "show", f":{rel}"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return json.loads(shown.stdout)


def test_the_course_has_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown"
    for needed in ("What you will learn", "Prerequisites", "Time"):
        assert needed in first, f"{path.name}: the first cell must say '{needed}'"
    text = "\n".join("".join(c["source"]) for c in cells)
    assert "VDLEARN_SMOKE" in text, f"{path.name}: needs the smoke switch"
    assert "Exercises" in text and "<details>" in text, f"{path.name}: needs exercises with revealable solutions"
    assert ".cuda()" not in text
    last = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and last.startswith("## Next"), (
        f"{path.name}: the last cell must say which notebook comes next ('## Next: ...')")
    later = [p for p in NOTEBOOKS if p.name > path.name]
    if later:
        assert later[0].stem in last, f"{path.name}: the last cell must name {later[0].stem}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    nb = committed_version(path)
    if nb is None:
        pytest.skip("not a git checkout (or the notebook is not tracked): nothing will be committed")
    cells = nb["cells"]
    with_outputs = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not with_outputs, (f"{path.name}: the staged version has outputs (cells {with_outputs}); run `make strip` "
                              f"and `git add` it again, or `make setup` to install the nbstripout git filter")
