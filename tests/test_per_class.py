"""The paper's per-category views (Figs. 4-6) and Table I (unichest_lib.evidence.per_class):
per-class AUCs over seeds on the shared patient resamples, checked against scikit-learn on
made-up scores, and the dot plot that draws them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unichest_lib.book import figures
from unichest_lib.config import resolve
from unichest_lib.evidence import measures, transfer
from unichest_lib.evidence import per_class as P

CLASSES = ("a", "b", "c", "d")
SEEN = (True, True, False, True)
#: How strongly each variant's scores follow the labels (UniChest best, CLIP-style worst).
STRENGTH = {"UniChest": 0.35, "Conquer only": 0.25, "CLIP-style": 0.05, "one source": 0.2}
N = 80


def _labels():
    rng = np.random.default_rng(7)
    y = (rng.random((N, len(CLASSES))) < 0.4).astype(float)
    y[:, 3] = 0
    y[0, 3] = 1  # class d: one positive, left out of every table
    mask = rng.random((N, len(CLASSES))) > 0.1
    mask[0, 3] = True
    return y, mask, np.repeat(np.arange(N // 2), 2).astype(str)


def _probs(name, seed, source):
    y, _, _ = _labels()
    tag = list(f"{name}/{seed}/{source}".encode())
    noise = np.random.default_rng(tag).random(y.shape)
    return np.clip(STRENGTH.get(name, 0.2) * y + (1 - STRENGTH.get(name, 0.2)) * noise, 0, 1)


def fake_scored(cfg, name, seed, source, *, split="test", by=None, progress=True, **extra):
    y, mask, patients = _labels()
    return measures.Scored(_probs(name, seed, source), y.copy(), mask, patients, CLASSES, SEEN)


@pytest.fixture()
def faked(monkeypatch):
    monkeypatch.setattr(P, "scored", fake_scored)
    monkeypatch.setattr(measures, "scored", fake_scored)

    def predictions(cfg, encoder, seed, *, source, protocols, portions, epochs, progress):
        assert encoder == "one source" and protocols == ("fine-tune",) and portions == (1.0,)
        fit = transfer.Fit(_probs(f"tuned{epochs}", seed, source), np.full(len(CLASSES), np.nan))
        return {("fine-tune", 1.0): [fit]}  # one run at 100 % (transfer_predictions' shape)

    monkeypatch.setattr(P, "transfer_predictions", predictions)


def _sk_auc(name, seed, j, source="src"):
    y, mask, _ = _labels()
    m = mask[:, j]
    return roc_auc_score(y[m, j], _probs(name, seed, source)[m, j])


def test_class_table_means_are_seed_means_of_sklearn_aucs_with_paired_differences(faked):
    cfg = resolve("smoke")
    seeds = (0, 1)
    names = ["CLIP-style", "UniChest"]
    t = P.class_table(cfg, names, "src")
    assert set(t["class"]) == {"a", "b", "c"} and "d (1)" in t.attrs["flagged"]
    assert len(t) == 2 * 3 and (t["n_seeds"] == 2).all()
    assert (t["lo"] <= t["mean"]).all() and (t["mean"] <= t["hi"]).all()
    assert (t["hi"] > t["lo"]).all()
    for _, r in t.iterrows():  # the slow, obvious reference: sklearn per class and seed
        j = CLASSES.index(r["class"])
        assert r["mean"] == pytest.approx(np.mean([_sk_auc(r["variant"], s, j) for s in seeds]),
                                          abs=1e-12)
        if r["variant"] == "UniChest":
            assert r["verdict"] == "" and np.isnan(r["diff"])
        else:
            ref = np.mean([_sk_auc("UniChest", s, j) - _sk_auc(r["variant"], s, j)
                           for s in seeds])
            assert r["diff"] == pytest.approx(ref, abs=1e-12)
            assert r["diff_lo"] <= r["diff"] <= r["diff_hi"]
            assert r["verdict"] in ("holds", "contradicted", "inconclusive")
    # the strong signal wins clearly on every class: the paired verdicts say so
    assert (t[t["variant"] == "CLIP-style"]["verdict"] == "holds").all()
    assert P.standing(t).startswith("UniChest − CLIP-style: above zero on 3 of 3 classes")
    assert t.attrs["evidence"].status == "live"


def test_the_macro_of_the_class_measures_is_the_macro_measure_on_the_same_resamples(faked):
    cfg = resolve("smoke")
    per, table = P.class_measures(cfg, "UniChest", "src", n_boot=40)
    macro = measures.macro_measure(cfg, "UniChest", ["src"], n_boot=40)
    assert np.allclose(per["mean"].points, macro.points)
    assert np.allclose(per["mean"].reps, macro.reps, equal_nan=True)
    assert list(table["kept"]) == [True, True, True, False]
    unseen, _ = P.class_measures(cfg, "UniChest", "src", seen=False, n_boot=40)
    assert set(unseen) == {"c", "mean"}


def test_table_i_pairs_unichest_with_the_fine_tuned_one_source_model(faked, tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    t = P.table_i(cfg, source="src", epochs=3, n_boot=60)
    assert list(dict.fromkeys(t["row"])) == list(P.TABLE_I_ROWS) + [P.DIFFERENCE]
    assert list(t[t["row"] == "UniChest"]["class"]) == ["mean", "a", "b", "c"]
    assert (t["epochs"] == 3).all()
    seeds = (0, 1)
    by = t.set_index(["row", "class"])
    for row, name in (("UniChest", "UniChest"), ("one source", "one source"),
                      (P.FINE_TUNED, "tuned3")):
        per_seed = [np.mean([_sk_auc(name, s, j) for j in range(3)]) for s in seeds]
        assert by.loc[(row, "mean"), "mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert by.loc[(row, "b"), "mean"] == pytest.approx(
            np.mean([_sk_auc(name, s, 1) for s in seeds]), abs=1e-12)
    d = by.loc[(P.DIFFERENCE, "mean")]
    assert d["mean"] == pytest.approx(by.loc[("UniChest", "mean"), "mean"]
                                      - by.loc[(P.FINE_TUNED, "mean"), "mean"], abs=1e-12)
    assert d["lo"] <= d["mean"] <= d["hi"] and d["verdict"] in ("holds", "contradicted",
                                                                 "inconclusive")
    assert (t[t["row"] != P.DIFFERENCE]["verdict"] == "").all()
    study = P.table_i_study(cfg.replace(), ["UniChest", "one source"], source="chestxray14",
                            epochs=3)
    assert study.ran and study.values["t1_n_classes"] == 3
    assert set(study.values) == set(P.T1_VALUES)
    assert sum(study.values[f"t1_{v}"] for v in ("holds", "contradicted", "inconclusive")) == 3
    assert study.values["t1_unichest"].count("[") == 1
    skipped = P.table_i_study(cfg, ["UniChest", "CLIP-style"])
    assert not skipped.ran and "one source" in skipped.note
    assert set(skipped.values) == set(P.T1_VALUES)


def test_class_dots_draw_one_trace_per_variant_with_its_intervals(faked):
    t = P.class_table(resolve("smoke"), ["Conquer only", "CLIP-style", "UniChest"], "src")
    fig = figures.class_dots(t, title="per class", order=P.FIGURE_ROWS)
    assert [tr.name for tr in fig.data] == ["Conquer only", "CLIP-style", "UniChest"]
    assert list(fig.layout.yaxis.ticktext) == ["a", "b", "c"]
    u = fig.data[-1]
    d = t[t["variant"] == "UniChest"]
    assert list(u.x) == pytest.approx(list(d["mean"]))
    assert list(u.error_x.array) == pytest.approx(list(d["hi"] - d["mean"]))
    assert list(u.error_x.arrayminus) == pytest.approx(list(d["mean"] - d["lo"]))
    assert len({round(y % 1, 6) for y in u.y}) == 1  # one offset per variant, within its row
    assert len(figures.class_dots(t.iloc[:0]).data) == 0
    with pytest.raises(ValueError, match="class_dots"):
        figures.class_dots(t.drop(columns="lo"))


def test_figure_views_follow_the_sources_of_the_configuration(faked):
    cfg = resolve("smoke")
    assert P.figure_views(cfg) == list(P.FIGURES)  # the embedded world has every view
    small = cfg.replace(downstream=("openi",))
    assert P.figure_views(small) == ["fig4_left", "fig4_right"]
    empty = P.view_table(small, ["UniChest"], "fig6")
    assert empty.empty and "not in this configuration" in empty.attrs["note"]
    assert len(figures.class_dots(empty).data) == 0
    t = P.view_table(cfg, ["CLIP-style", "UniChest"], "fig5")  # the fake's seen classes
    assert set(t["class"]) == {"a", "b"} and t.attrs["title"].startswith("Fig. 5")
    assert "Left out" in t.attrs["note"] and "UniChest − CLIP-style" in t.attrs["note"]
    assert list(P.PAPER_TABLE_I.columns[:2]) == ["mean", "atelectasis"]
    assert P.PAPER_TABLE_I.shape == (6, 15)


def test_table_i_reads_as_the_paper_prints_it_with_a_verdict_row(faked, tmp_path):
    from unichest_lib.book import tables

    t = P.table_i(resolve("smoke", cache_dir=str(tmp_path)), source="src", n_boot=30)
    wide = tables.table_i_wide(t)
    assert list(wide.columns) == ["positives"] + list(P.TABLE_I_ROWS) + [P.DIFFERENCE, "verdict"]
    assert list(wide.index) == ["mean", "a", "b", "c"]
    diff = t[t["row"] == P.DIFFERENCE].set_index("class")["verdict"]
    assert list(wide["verdict"]) == list(diff[["mean", "a", "b", "c"]])
    y, mask, _ = _labels()
    assert list(wide["positives"]) == ["", *(str(int(y[mask[:, j], j].sum())) for j in range(3))]
    cell = t[(t["row"] == "UniChest") & (t["class"] == "b")].iloc[0]
    assert wide.loc["b", "UniChest"] == f"{cell['mean']:.3f} [{cell['lo']:.3f}, {cell['hi']:.3f}]"
    recorded = t.assign(verdict=t["verdict"].replace("", np.nan))  # as a CSV gives it back
    assert tables.table_i_wide(recorded).equals(wide)
