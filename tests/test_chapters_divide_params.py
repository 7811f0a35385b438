"""Acceptance of chapter 03's parameters (issue 7): ``-p K 3 -p lam 0.3`` changes the number
of query networks and Eq. 5 by hand still equals the model's output; ``-p K 0`` fails before any work, naming K."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import execute_notebook, glued, outputs_text

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


@pytest.mark.slow
@pytest.mark.notebooks
def test_k3_lam03_changes_query_networks_and_eq5(tmp_path):
    nb = execute_notebook(NOTEBOOK, tmp_path / "k3.ipynb", profile="smoke", K=3, lam=0.3)
    text, _ = outputs_text(nb)
    assert "K = 3 query networks (1 shared + 2 experts), lambda = 0.3" in text
    assert "QN3 (expert)" in text and "QN4 (expert)" not in text
    assert "experts (16, 2, " in text  # s^k of the two experts in the Eq. 5 walk-through
    assert float(glued(nb)["eq5_diff"]) <= 1e-6  # Eq. 5 by hand with lambda = 0.3
