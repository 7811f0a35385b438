"""Chapter 03's parameters: ``-p K 0`` fails before any work, naming K. (``-p K 3 -p lam 0.3``
is checked by the chapter's run on real-format data in ``test_notebooks.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import execute_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_divide.ipynb"


@pytest.mark.notebooks
def test_k_zero_fails_clearly_before_any_work(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match=r"'K' = 0 must be an integer >= 1"):
        execute_notebook(NOTEBOOK, tmp_path / "bad.ipynb", profile="smoke", K=0)
    import nbformat

    cells = [c for c in nbformat.read(tmp_path / "bad.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    failed = [i for i, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c.outputs)]
    assert len(failed) == 1 and "notebook.setup(" in cells[failed[0]].source
    assert not any(c.get("execution_count") for c in cells[failed[0] + 1:]), "work ran after the error"
