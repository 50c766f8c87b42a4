"""Every notebook follows the course's shape (nbval, run by the same pytest command, executes them)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


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
    with_outputs = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not with_outputs, f"{path.name}: outputs must be stripped before commit (cells {with_outputs}); run `make strip`"
