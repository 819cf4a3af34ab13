"""Every tutorial runs top to bottom in smoke mode and converts to a valid notebook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("[0-9]*.py"))


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials found"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_in_smoke_mode(path, tmp_path):
    env = {
        **os.environ,
        "ARDM_INFER_SMOKE": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ARDM_INFER_TUTORIAL_OUT": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=path.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, (
        f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    assert list(tmp_path.rglob("*.png")), f"{path.name} wrote no figure under {tmp_path}"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_a_valid_notebook(path):
    import jupytext  # test extra (pyproject): a missing package fails, never skips
    import nbformat

    notebook = jupytext.read(path)
    nbformat.validate(notebook)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown", "a tutorial opens with a title cell"
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3
    assert all(cell.source.strip() for cell in notebook.cells), "empty cell"
