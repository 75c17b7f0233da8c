"""Every lesson notebook runs top to bottom against its shipped checkpoint, asserting its own claims,
and the notebooks are in sync with their sources in lessons/src/. Every exercise is three cells in
this order: the stub, the check on the student's function, the solution (which runs the check too)."""

import ast
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

LESSONS = pathlib.Path(__file__).resolve().parents[1] / "lessons"
sys.path.insert(0, str(LESSONS))
import build  # noqa: E402

NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted((LESSONS / "src").glob("[0-9][0-9]_*.py"))


def test_notebooks_are_built_from_their_sources():
    assert build.build(check=True) == [], "run: python lessons/build.py"
    assert NOTEBOOKS, "no lessons found"


def _text(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _exercises(cells):
    """(stub, check, solution) cells of every exercise: the two code cells before each solution."""
    for i, cell in enumerate(cells):
        if "solution" in cell["metadata"].get("tags", []):
            assert i >= 2, "a solution cell needs a stub and a check before it"
            yield cells[i - 2], cells[i - 1], cell


def _checks(tree) -> set[tuple[str, str]]:
    """(checker, function) for every top-level `check_...(function)` call."""
    return {
        (s.value.func.id, s.value.args[0].id)
        for s in tree.body
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name)
        if s.value.func.id.startswith("check_") and s.value.args and isinstance(s.value.args[0], ast.Name)
    }


def _is_stub(fn: ast.FunctionDef) -> bool:
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    return (
        len(body) == 1
        and isinstance(body[0], ast.Raise)
        and isinstance(body[0].exc, ast.Call)
        and getattr(body[0].exc.func, "id", None) == "NotImplementedError"
    )


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_exercise_is_stub_then_check_then_solution(source):
    cells = build.parse(source.read_text())
    exercises = list(_exercises(cells))
    assert exercises, "no exercise found"
    for stub, check, solution in exercises:
        assert stub["cell_type"] == check["cell_type"] == "code", _text(solution)
        stub_tree, check_tree, solution_tree = (ast.parse(_text(c)) for c in (stub, check, solution))
        defined = {s.name for s in solution_tree.body if isinstance(s, ast.FunctionDef)}
        stubs = {s.name: s for s in stub_tree.body if isinstance(s, ast.FunctionDef)}
        where = f"exercise {sorted(defined)} of {source.name}"
        assert set(stubs) == defined, f"{where}: the stub cell must define the functions the solution defines"
        assert all(_is_stub(fn) for fn in stubs.values()), f'{where}: a stub raises NotImplementedError("...")'
        checks = _checks(solution_tree)
        assert {fn for _, fn in checks} == defined, f"{where}: the solution must run the check on each function"
        assert _checks(check_tree) == checks, f"{where}: the cell between stub and solution runs the same checks"
        assert all(isinstance(s, (ast.ImportFrom, ast.Expr)) for s in check_tree.body), f"{where}: check cell"


@pytest.mark.slow  # 30 s to 2 min a lesson
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

    def printed(cell):
        return "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream")

    for _stub, check, solution in _exercises(nb.cells):
        # the empty stub was reported, not run into; the solution was checked, and passed
        assert "not written yet" in printed(check) and "correct" not in printed(check), _text(check)
        assert "correct" in printed(solution) and "not written yet" not in printed(solution), _text(solution)
