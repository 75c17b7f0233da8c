"""Every lesson notebook runs top to bottom against its shipped checkpoint, asserting its own claims,
and the notebooks are in sync with their sources in lessons/src/."""

import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

LESSONS = pathlib.Path(__file__).resolve().parents[1] / "lessons"
sys.path.insert(0, str(LESSONS))
import build  # noqa: E402

NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_are_built_from_their_sources():
    assert build.build(check=True) == [], "run: python lessons/build.py"
    assert NOTEBOOKS, "no lessons found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    # run from another folder than lessons/: a notebook must find its checkpoints wherever it is opened
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(elsewhere)}}, allow_errors=False
    )
    client.execute()  # raises CellExecutionError with the cell and the traceback if an assertion fails
    nbformat.write(nb, tmp_path / path.name)  # kept for inspection when run with --basetemp
