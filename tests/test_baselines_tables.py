"""Chapter 06's tables: the paper's numbers, the row registry and the generated reading."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from unichest_lib import config as C
from unichest_lib.evidence import paper_tables
from unichest_lib.evidence.variants import VARIANTS


def test_every_row_is_a_variant_and_names_its_paper_rows():
    for row in paper_tables.ROWS:
        assert row in VARIANTS and row in paper_tables.PAPER_ROWS
        for paper_row in paper_tables.PAPER_ROWS[row]:
            assert paper_row in paper_tables.PAPER, f"{row}: {paper_row} has no numbers"
    assert paper_tables.ROWS[-1] == "UniChest"


def test_baseline_variants_train_the_method_they_name():
    for row, method in (("MedKLIP-style", "medklip"), ("MGCA-style", "mgca"),
                        ("CLIP-style", "clip"), ("Conquer only", "unichest")):
        cfg = C.resolve("smoke")
        c = dict(VARIANTS[row].overrides)
        assert c.get("method", "unichest") == method
        assert VARIANTS[row].stage == "conquer"
        C.resolve("smoke", **c)  # a valid configuration


def test_paper_value_takes_the_most_specific_paper_row_that_has_a_number():
    # Table VI gives UniChest's Conquer stage on ChestX-ray14 ...
    assert paper_tables.paper_value("Conquer only", "chestxray14", "aAUC") == \
        (0.8468, "UniChest (only Conquer stage)")
    # ... but not on CheXpert, where Table IV's KAD-multi stands in
    assert paper_tables.paper_value("Conquer only", "chexpert", "mAP") == (0.5626, "KAD-multi")
    assert paper_tables.paper_value("UniChest", "vindr", "aACC") == (0.9501, "UniChest")
    v, row = paper_tables.paper_value("MGCA-style", "chestxray14", "aAUC")
    assert math.isnan(v) and row == ""
    v, row = paper_tables.paper_value("UniChest", "mimic", "aAUC")  # not in Table IV
    assert math.isnan(v)
    with pytest.raises(ValueError, match="unknown row"):
        paper_tables.paper_value("KAD", "chestxray14", "aAUC")
    with pytest.raises(ValueError, match="unknown metric"):
        paper_tables.paper_value("UniChest", "chestxray14", "AUROC")


def test_paper_numbers_keep_the_papers_ranking_on_chestxray14():
    # a typo check against the paper's text: UniChest beats KAD-multi by 1.53 points of aAUC
    # on ChestX-ray14 and KAD-CXR14 by 2.04 (Dai et al. 2024, Sec. IV-C1)
    p = paper_tables.PAPER
    assert p["UniChest"]["chestxray14"]["aAUC"] - p["KAD-CXR14"]["chestxray14"]["aAUC"] == \
        pytest.approx(0.0204, abs=1e-4)
    assert p["UniChest"]["chestxray14"]["aAUC"] > p["KAD-multi"]["chestxray14"]["aAUC"]


def test_unknown_rows_are_refused_by_name():
    with pytest.raises(ValueError, match="KAD-multi"):
        paper_tables.table_iv(C.resolve("smoke"), ["UniChest", "KAD-multi"])


def _vs(rows):
    return pd.DataFrame([dict(comparison=f"UniChest − {n}", setting=s, mean=m, lo=lo, hi=hi)
                         for n, s, m, lo, hi in rows])


def test_ranking_table_ranks_each_view_by_mean_aauc():
    t4 = pd.DataFrame(dict(variant=["UniChest", "CLIP-style", "Conquer only", "UniChest"],
                           source=["mean", "mean", "mean", "a"], metric="aAUC",
                           mean=[0.70, 0.60, 0.71, 0.99]))
    t5 = pd.DataFrame(dict(variant=["UniChest", "CLIP-style"] * 2, source=["a", "a", "b", "b"],
                           group="seen", mean=[0.6, 0.5, 0.8, 0.7]))
    r = paper_tables.ranking_table(t4, t5)
    assert list(r.index) == ["Conquer only", "UniChest", "CLIP-style"]  # by in-domain rank
    assert list(r[("in-domain", "rank")]) == [1, 2, 3]
    assert r.loc["UniChest", ("zero-shot, seen classes", "aAUC")] == pytest.approx(0.7)
    assert r.loc["UniChest", ("zero-shot, seen classes", "rank")] == 1
    assert pd.isna(r.loc["Conquer only", ("zero-shot, seen classes", "rank")])  # not scored
    assert "zero-shot, unseen classes" not in r.columns.get_level_values(0)


def test_standing_reads_ahead_and_behind_from_the_intervals_and_fills_missing_views():
    t4 = pd.DataFrame(dict(variant=["UniChest", "CLIP-style", "Conquer only", "MGCA-style"],
                           source="mean", metric="aAUC", mean=[0.70, 0.60, 0.71, 0.72]))
    t5 = pd.DataFrame(columns=["variant", "source", "group", "mean"])
    vs = _vs([("CLIP-style", "in-domain", 0.10, 0.05, 0.15),
              ("Conquer only", "in-domain", -0.01, -0.03, 0.01),
              ("MGCA-style", "in-domain", -0.02, -0.03, -0.01)])
    st = paper_tables.standing(paper_tables.ranking_table(t4, t5), vs)
    assert st["n_rows"] == 4 and st["in_domain_rank"] == 3
    assert st["in_domain_aauc"] == pytest.approx(0.70)
    assert (st["in_domain_ahead"], st["in_domain_behind"], st["in_domain_unclear"]) == \
        ("CLIP-style", "MGCA-style", "Conquer only")
    assert st["seen_rank"] == "n/a" and math.isnan(st["seen_aauc"])
    assert st["unseen_ahead"] == "n/a"
    assert set(st) == {"n_rows"} | {f"{v}_{k}" for v in paper_tables.VIEWS.values() for k in
                                    ("rank", "aauc", "ahead", "behind", "unclear")}


def test_wide_shows_means_with_intervals_and_the_paper_beside_them():
    df = pd.DataFrame(dict(variant=["UniChest", "MGCA-style"], source="chestxray14",
                           metric="aAUC", mean=[0.71234, np.nan], lo=[0.7, np.nan],
                           hi=[0.72, np.nan], paper=[0.8584, np.nan]))
    w = paper_tables.wide(df, columns="source")
    assert w.loc["UniChest", ("ours", "chestxray14")] == "0.712 [0.700, 0.720]"
    assert w.loc["UniChest", ("paper", "chestxray14")] == "0.858"
    assert w.loc["MGCA-style", ("ours", "chestxray14")] == "n/a"
    assert w.loc["MGCA-style", ("paper", "chestxray14")] == "—"


def test_a_default_tutorial_build_leaves_unstored_baselines_to_the_full_ledger(tmp_path,
                                                                                monkeypatch):
    from unichest_lib.evidence import ledger

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = C.resolve("tutorial", cache_dir=str(tmp_path))  # an empty store
    keep, left = paper_tables.rows_to_run(cfg)
    assert left == list(paper_tables.EXPENSIVE_ROWS)
    assert keep == [r for r in paper_tables.ROWS if r not in paper_tables.EXPENSIVE_ROWS]
    keep, left = paper_tables.rows_to_run(cfg, full=True)
    assert keep == list(paper_tables.ROWS) and left == []
    keep, left = paper_tables.rows_to_run(C.resolve("smoke", cache_dir=str(tmp_path)))
    assert left == []  # smoke measures everything


def test_a_default_build_never_trains_a_row_for_the_cost_table(monkeypatch, tmp_path):
    from unichest_lib.evidence import ledger, variants

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = C.resolve("tutorial", cache_dir=str(tmp_path))  # nothing stored, nothing recorded

    def no_training(*a, **k):
        raise AssertionError("the cost table trained a run")
    monkeypatch.setattr(paper_tables, "variant_model", no_training)
    monkeypatch.setattr(paper_tables, "variant_history", no_training)
    monkeypatch.setattr(variants, "variant_model", no_training)
    study = paper_tables.cost_study(cfg, ["Conquer only", "UniChest"])
    assert not study.ran and "make ledger" in study.note
    assert not paper_tables.cost_rows.available(cfg, ["Conquer only", "UniChest"])


def test_a_recorded_baseline_row_is_shown_without_training(monkeypatch, tmp_path):
    from unichest_lib.evidence import ledger, reproduce

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = C.resolve("tutorial", cache_dir=str(tmp_path))  # nothing stored
    rows = ["MedKLIP-style", "UniChest"]
    monkeypatch.setattr(reproduce, "recorded_runs", lambda c, name, seeds, sources: False)
    assert paper_tables.rows_to_run(cfg, rows) == (["UniChest"], ["MedKLIP-style"])
    seen = []
    monkeypatch.setattr(reproduce, "recorded_runs",
                        lambda c, name, seeds, sources: seen.append((name, tuple(sources))) or True)
    assert paper_tables.rows_to_run(cfg, rows) == (rows, [])
    assert seen == [("MedKLIP-style", tuple(cfg.sources))]
