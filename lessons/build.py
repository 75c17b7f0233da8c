"""Build the lesson notebooks from their plain-text sources: python lessons/build.py

Each lessons/src/NN_name.py is a notebook in jupytext's "percent" format, so it also opens as a
notebook in jupytext, VS Code and Colab tooling: `# %% [markdown]` starts a markdown cell (its
lines are comments), `# %%` a code cell, and `# %% tags=["solution"]` a code cell that Jupyter
shows collapsed (an exercise's solution). Sources diff and review like code; the .ipynb files
beside this script are generated from them (without outputs), and a test checks they are in sync.

An exercise is three cells, in this order: the stub (`raise NotImplementedError("your code here")`),
the check (`check_...(fn)` from minillm/lessons/checkers.py, which runs the student's function and,
on a stub still empty, says so without stopping the notebook), and the solution, which defines the
function again and runs the same check on it; tests/test_lessons.py holds every lesson to that.
"""

from __future__ import annotations

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def parse(source: str) -> list[dict]:
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        if kind == "markdown":
            text = [l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines]
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _join(text)})
        else:
            metadata = {}
            if kind == "solution":
                metadata = {"tags": ["solution"], "jupyter": {"source_hidden": True}, "cellView": "form"}
            cells.append(
                {
                    "cell_type": "code",
                    "metadata": metadata,
                    "source": _join(lines),
                    "execution_count": None,
                    "outputs": [],
                }
            )

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = _cell_kind(line[4:].strip())
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def _cell_kind(marker: str) -> str:
    """ "[markdown]", "" or 'tags=["solution"]' (the percent format's cell metadata)."""
    if marker == "[markdown]":
        return "markdown"
    if marker == 'tags=["solution"]':
        return "solution"
    if marker:
        raise ValueError(f"unknown cell marker '# %% {marker}'")
    return "code"


def _join(lines: list[str]) -> list[str]:
    return [l + "\n" for l in lines[:-1]] + lines[-1:] if lines else []


def notebook(source: str) -> dict:
    cells = parse(source)
    for i, cell in enumerate(cells):  # stable ids, so that rebuilding changes nothing
        cell["id"] = f"cell-{i:03d}"
    return {
        "cells": cells,
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    }


def build(check: bool = False) -> list[str]:
    """Write (or with check=True, compare) every notebook; returns the out-of-date ones."""
    stale = []
    for src in sorted((HERE / "src").glob("*.py")):
        target = HERE / f"{src.stem}.ipynb"
        text = json.dumps(notebook(src.read_text()), indent=1, ensure_ascii=False) + "\n"
        if not target.exists() or target.read_text() != text:
            stale.append(target.name)
            if not check:
                target.write_text(text)
    return stale


if __name__ == "__main__":
    stale = build(check="--check" in sys.argv)
    print(("out of date: " if "--check" in sys.argv else "wrote: ") + (", ".join(stale) or "nothing"))
    sys.exit(1 if stale and "--check" in sys.argv else 0)
