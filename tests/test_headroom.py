"""Specialisation headroom (issue #14 item 1): per-source oracle heads against one shared head
on stored frozen patches (unichest_lib.training.source_oracle), and its measure next to Divide's
realised gain (unichest_lib.evidence.headroom)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from unichest_lib.config import resolve
from unichest_lib.model.query import QueryNetworks
from unichest_lib.training import features
from unichest_lib.training import source_oracle
from unichest_lib.training.rng import seed_everything
from unichest_lib.training.stages import init_from_conquer
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg

D, HW, N = 16, 4, 192  # feature width, patches per image, rows per source and split


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny heads: one intra-op thread is several times faster than two on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _world(seed: int, conflict: bool):
    """Two sources whose patches carry z along one fixed direction (plus noise) and nothing
    about the source. Class 0 is [z > 0] in both sources, or, with ``conflict``, [z > 0] in
    source 0 and [z < 0] in source 1: then only a head that knows the source can score it."""
    u = np.random.default_rng(42).standard_normal(D)
    u /= np.linalg.norm(u)
    rng = np.random.default_rng(seed)
    src = np.repeat([0, 1], N)
    z = rng.standard_normal(2 * N)
    patches = rng.standard_normal((2 * N, HW, D)) * 0.35 + z[:, None, None] * u
    y = (z > 0).astype(np.float32)
    if conflict:
        y = np.where(src == 0, y, 1.0 - y)
    feats = features.FrozenFeatures(torch.tensor(patches, dtype=torch.float32), (2, 2), 2 * N)
    return feats, y[:, None], src


def _cfg(**kw):
    base = dict(embed_dim=D, n_heads=2, ffn_dim=32, n_decoder_layers=1, batch_size=16,
                divide_epochs=3, lr=3e-3, amp=False, dropout=0.0, seed=0)
    return resolve("smoke", **{**base, **kw})


def _qn1():
    qn = QueryNetworks(1, dim=D, n_heads=2, ffn_dim=32, n_layers=1, dropout=0.0)
    qn.reset_parameters(torch.Generator().manual_seed(0))
    return qn


def _headroom(conflict: bool, oracle: str):
    """Per source (AUC of its oracle, AUC of the shared head) on held-out rows."""
    cfg = _cfg(divide_epochs=6)
    queries = torch.randn(1, D, generator=torch.Generator().manual_seed(1))
    train, y, src = _world(0, conflict)
    test, y_test, src_test = _world(1, conflict)
    heads = source_oracle.fit_heads(_qn1(), queries, train, y, np.ones_like(y, bool), src, cfg,
                               oracle=oracle)
    out = {}
    for s in (0, 1):
        rows = np.flatnonzero(src_test == s)
        sub = features.FrozenFeatures(test.patches[rows], test.grid, len(rows))
        out[s] = tuple(roc_auc_score(y_test[rows, 0],
                                     source_oracle.predict_head(h, queries, sub, cfg)[:, 0])
                       for h in (heads.oracle[s], heads.shared))
    return out


@pytest.mark.parametrize("oracle", source_oracle.ORACLES)
def test_the_oracle_wins_clearly_when_labels_depend_on_the_source(oracle):
    auc = _headroom(conflict=True, oracle=oracle)
    gain = np.mean([o - s for o, s in auc.values()])
    assert all(o > 0.85 for o, _ in auc.values()), auc  # knowing the source, it learns both
    assert abs(np.mean([s for _, s in auc.values()]) - 0.5) < 0.15, auc  # one head cannot
    assert gain > 0.3, auc


@pytest.mark.parametrize("oracle, tolerance", [("conditioned", 0.01), ("separate", 0.05)])
def test_no_headroom_when_labels_do_not_depend_on_the_source(oracle, tolerance):
    """The conditioned oracle sees every row, as the shared head does (measured gain: +0.000);
    separate heads see half the rows each, which costs them (measured: -0.02)."""
    auc = _headroom(conflict=False, oracle=oracle)
    gain = np.mean([o - s for o, s in auc.values()])
    assert all(s > 0.9 for _, s in auc.values()), auc
    assert abs(gain) < tolerance, auc


def test_the_conditioned_oracle_starts_as_the_shared_head_and_differs_only_by_its_offsets():
    qn = _qn1()
    cond = source_oracle.SourceConditioned(copy.deepcopy(qn), 3, 2, D)
    x, pos, q = torch.randn(5, HW, D), torch.randn(HW, D), torch.randn(2, D)
    src = torch.tensor([0, 2, 1, 1, 0])
    np.testing.assert_array_equal(cond(q, x, pos, src)[0].detach(), qn(q, x, pos)[0].detach())
    with torch.no_grad():
        cond.offset[2] += 1.0  # only the rows of source 2 change
    a, b = cond(q, x, pos, src)[0].detach(), qn(q, x, pos)[0].detach()
    assert not torch.equal(a[1], b[1])
    keep = torch.tensor([0, 2, 3, 4])
    np.testing.assert_array_equal(a[keep], b[keep])
    with pytest.raises(ValueError, match="oracle"):
        source_oracle.fit_heads(qn, q, features.FrozenFeatures(x, (2, 2), 5), np.zeros((5, 2)),
                           np.ones((5, 2), bool), np.zeros(5, int), _cfg(), oracle="bogus")


def test_the_oracle_heads_take_as_many_steps_on_the_same_rows_as_the_shared_head(monkeypatch):
    src = np.repeat([0, 1, 2], [37, 50, 21])  # sizes that are not multiples of the batch
    shared, oracle = source_oracle.batch_plan(src, 8, 3, seed=5)
    assert sum(len(p) for p in oracle.values()) == len(shared) == 3 * (4 + 6 + 2)
    per_epoch = len(shared) // 3
    for e in range(3):  # each epoch: the same rows (a multiset), pure batches for the oracle
        rows_shared = shared[e * per_epoch:(e + 1) * per_epoch].flatten()
        rows_oracle = torch.cat([p[e * len(p) // 3:(e + 1) * len(p) // 3].flatten()
                                 for p in oracle.values()])
        assert torch.equal(rows_shared.sort().values, rows_oracle.sort().values)
        assert len(set(rows_shared.tolist())) == len(rows_shared)  # each row once per epoch
    assert all((src[p.numpy()] == s).all() for s, p in oracle.items())
    assert max(len(set(src[b.numpy()])) for b in shared) > 1  # the shared batches are mixed
    again = source_oracle.batch_plan(src, 8, 3, seed=5)
    assert torch.equal(again[0], shared)
    assert all(torch.equal(again[1][s], oracle[s]) for s in oracle)

    # count the optimiser steps themselves, per optimiser
    calls: dict[int, int] = {}
    step = torch.optim.AdamW.step

    def counted(self, *a, **k):
        calls[id(self)] = calls.get(id(self), 0) + 1
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    cfg = _cfg(divide_epochs=2, batch_size=8)
    feats = features.FrozenFeatures(torch.randn(len(src), HW, D), (2, 2), len(src))
    y = np.zeros((len(src), 1), np.float32)
    heads = source_oracle.fit_heads(_qn1(), torch.randn(1, D), feats, y, np.ones_like(y, bool), src, cfg,
                               oracle="separate")
    counts = sorted(calls.values())
    assert len(counts) == 4 and counts[-1] == sum(counts[:-1]) == 2 * 12
    assert heads.steps["shared"] == sum(heads.steps[s] for s in (0, 1, 2)) == 24
    calls.clear()  # the conditioned oracle: one optimiser, as many steps as the shared head
    heads = source_oracle.fit_heads(_qn1(), torch.randn(1, D), feats, y, np.ones_like(y, bool), src, cfg)
    assert sorted(calls.values()) == [24, 24]
    assert heads.steps == {"shared": 24, "oracle": 24}
    with pytest.raises(ValueError, match="fewer training rows than one batch"):
        source_oracle.batch_plan(src, 32, 1, seed=0)


def test_heads_are_deterministic_for_a_seed_and_change_with_it():
    def probs(seed):
        cfg = _cfg(seed=seed, divide_epochs=1, dropout=0.2)
        qn = QueryNetworks(1, dim=D, n_heads=2, ffn_dim=32, n_layers=1, dropout=0.2)
        qn.reset_parameters(torch.Generator().manual_seed(0))
        feats, y, src = _world(0, True)
        q = torch.ones(1, D)
        return np.concatenate([source_oracle.predict_head(m, q, feats, cfg)
                               for kind in source_oracle.ORACLES
                               for h in [source_oracle.fit_heads(qn, q, feats, y, np.ones_like(y, bool),
                                                            src, cfg, oracle=kind)]
                               for m in (h.shared, *h.oracle.values())])

    a = probs(0)
    np.testing.assert_array_equal(a, probs(0))
    assert not np.array_equal(a, probs(1))


def test_heads_train_on_stored_patches_and_leave_the_model_untouched(tmp_path):
    """From a real (tiny) Conquer checkpoint: the encoders never run while the heads train
    (they read the stored patches), and no parameter of the model changes, QN¹ included."""
    from unichest_lib.model import UniChest

    cfg = tiny_cfg(K=2, batch_size=4)
    train, val = synth(SOURCES, 12, 32, 0), synth(SOURCES[:1], 8, 32, 1)
    seed_everything(cfg.seed, cfg.deterministic)
    result = Trainer(cfg, "conquer", tmp_path,
                     progress=False).fit(UniChest(cfg, train.classes), train, val)
    model = UniChest(cfg, train.classes)
    init_from_conquer(model, result.checkpoint)
    before = copy.deepcopy(model.state_dict())
    tests = {}
    for i, s in enumerate(SOURCES):
        ds = synth((s,), 10, 32, 2 + i)
        tests[s] = (ds, features.encode(model, ds, cfg))
    stored = features.encode(model, train, cfg)

    def refuse(*a, **k):
        raise AssertionError("the image encoder ran while the heads trained")

    model.image_encoder.forward = refuse
    out, heads = source_oracle.source_headroom(model, cfg, train, stored, tests)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert heads.steps == {"shared": 6, "oracle": 6}  # 12 rows per source, batches of 4
    for s, (ds, _) in tests.items():
        r = out[s]
        assert r.shared.shape == r.oracle.shape == (len(ds), len(ds.classes))
        assert np.isfinite(r.shared).all() and not np.array_equal(r.shared, r.oracle)
    assert all(p is not q for p in heads.shared.parameters() for q in model.parameters())


@pytest.mark.slow
def test_headroom_table_runs_end_to_end_on_the_smoke_world(tmp_path):
    from unichest_lib import evidence
    from unichest_lib.evidence import dials, headroom

    cfg = resolve("smoke", cache_dir=str(tmp_path))
    tab = evidence.headroom_table(cfg, seeds=(0,), progress=False)
    assert list(tab["source"]) == [*cfg.sources, "mean"]
    for col in ("headroom", "headroom_lo", "headroom_hi", "realised", "realised_lo",
                "realised_hi", "shared_auc", "oracle_auc"):
        assert np.isfinite(tab[col].to_numpy(float)).all(), (col, tab)
    assert (tab["headroom_lo"] <= tab["headroom"]).all()
    assert (tab["headroom"] <= tab["headroom_hi"]).all()
    # cached: a second call reads the predictions back, and gives the same numbers
    files = list((tmp_path / "evidence" / "headroom").glob("*.npz"))
    assert len(files) == 1
    again = evidence.headroom_table(cfg, seeds=(0,), progress=False)
    np.testing.assert_allclose(again["headroom"], tab["headroom"])
    m = headroom.headroom_measure(cfg, cfg.sources[0], seeds=(0,), progress=False)
    assert m.summary()["mean"] == pytest.approx(tab["headroom"].iloc[0])
    # per class: the macro headroom of a source is the mean of its classes' headroom
    by = headroom.headroom_by_class(cfg, seeds=(0,), progress=False)
    for i, src in enumerate(cfg.sources):
        per = by[by["source"] == src]
        assert len(per) and per["mean"].mean() == pytest.approx(tab["headroom"].iloc[i])
        assert (per["lo"] <= per["mean"]).all() and (per["mean"] <= per["hi"]).all()
    one = headroom.headroom_by_class(cfg, classes=[by["class"].iloc[0]], seeds=(0,),
                                     progress=False)
    assert set(one["class"]) == {by["class"].iloc[0]}
    # the runs of this world's dial cell are now stored; another world's are not
    assert dials.cell_stored(cfg, seeds=(0,))
    assert not dials.cell_stored(cfg, seeds=(0, 1))
    assert not dials.cell_stored(cfg.replace(heterogeneity=0.0), seeds=(0,))


def _ideal_headroom(label_meaning: float) -> dict[tuple[str, str], float]:
    """(oracle - shared) AUC per (source, class) on the embedded world's *labels* (population
    only, no pixels) under an ideal encoder: each image's patches carry its true findings, one
    direction per finding, plus noise, and nothing about its source."""
    from unichest_lib.config import set_dial
    from unichest_lib.data import labels as L
    from unichest_lib.data.world import world_of
    from unichest_lib.data.world.population import FINDINGS, source_labels

    srcs, d = ("mimic", "chestxray14", "chexpert", "vindr"), 32
    classes = list(L.in_union_order(c for s in srcs for c in L.embedded_label_space(s)))
    u = np.random.default_rng(7).standard_normal((len(FINDINGS), d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    world = world_of(set_dial(resolve("smoke", n_per_source=1500, n_valid=0, n_test=750),
                              "label_meaning", label_meaning))

    def split(name, seed):
        rng, x, y, s = np.random.default_rng(seed), [], [], []
        for i, src in enumerate(srcs):
            p, rows = world.population(src), world.rows(src, name)
            x.append((p.truth[rows] @ u)[:, None, :] + 0.3 * rng.standard_normal((len(rows), 4, d)))
            y.append(source_labels(p.state[rows], src, classes))
            s.append(np.full(len(rows), i))
        x = torch.tensor(np.concatenate(x), dtype=torch.float32)
        return features.FrozenFeatures(x, (2, 2), len(x)), np.concatenate(y), np.concatenate(s)

    (train, y, src), (test, y_test, src_test) = split("train", 0), split("test", 1)
    cfg = resolve("smoke", embed_dim=d, n_heads=2, ffn_dim=64, n_decoder_layers=1,
                  batch_size=32, divide_epochs=6, lr=3e-3, amp=False, dropout=0.0, seed=0)
    qn = QueryNetworks(1, dim=d, n_heads=2, ffn_dim=64, n_layers=1, dropout=0.0)
    qn.reset_parameters(torch.Generator().manual_seed(0))
    q = torch.randn(len(classes), d, generator=torch.Generator().manual_seed(1))
    heads = source_oracle.fit_heads(qn, q, train, y, ~np.isnan(y), src, cfg)
    out = {}
    for i, name in enumerate(srcs):
        rows = np.flatnonzero(src_test == i)
        sub = features.FrozenFeatures(test.patches[rows], test.grid, len(rows))
        po, ps = (source_oracle.predict_head(h, q, sub, cfg) for h in (heads.oracle[i], heads.shared))
        for j, c in enumerate(classes):
            t = y_test[rows, j]
            m = ~np.isnan(t)
            if (t[m] == 1).sum() >= 5 and (t[m] == 0).sum() >= 5:
                out[(name, c)] = roc_auc_score(t[m], po[m, j]) - roc_auc_score(t[m], ps[m, j])
    return out


@pytest.mark.slow
def test_the_label_meaning_dial_gives_the_oracle_headroom_under_an_ideal_encoder():
    """Issue #14: with the dial at 0 every source reads each class the same way and knowing
    the source is worth nothing; at 1 the report labellers' broad definitions ("lung opacity",
    "infiltration") make it worth something on exactly those classes. Measured (AMD EPYC):
    redefined classes +0.000 at 0 and +0.016 at 1; every class +0.000 and +0.005."""
    from unichest_lib.data.world.sources import BROAD_DEFINITIONS

    redefined = {c for d in BROAD_DEFINITIONS.values() for c in d}
    gains = {lvl: _ideal_headroom(lvl) for lvl in (0.0, 1.0)}
    on = {lvl: np.mean([v for (s, c), v in g.items() if c in redefined])
          for lvl, g in gains.items()}
    every = {lvl: np.mean(list(g.values())) for lvl, g in gains.items()}
    assert abs(on[0.0]) < 0.005 and abs(every[0.0]) < 0.005, (on, every)
    assert on[1.0] > 0.01 and on[1.0] > on[0.0] + 0.01, (on, gains[1.0])
    assert every[1.0] > every[0.0], every


# ---- the partial dial study of chapter 05 ------------------------------------------------
def test_the_stored_only_dial_study_measures_stored_worlds_once_and_trains_nothing(monkeypatch):
    from unichest_lib.evidence import dials

    cfg = resolve("smoke")
    default = (cfg.heterogeneity, cfg.dials)
    calls = []

    def fake_cell(c, progress=True):
        calls.append((c.heterogeneity, c.dials))
        return dict(headroom=0.01, headroom_lo=0.0, headroom_hi=0.02, realised=0.0,
                    realised_lo=-0.01, realised_hi=0.01)

    monkeypatch.setattr(dials, "dial_cell", fake_cell)
    monkeypatch.setattr(dials, "cell_stored", lambda c, seeds=None: (c.heterogeneity, c.dials) == default)
    study = dials.dial_table(cfg, stored_only=True)
    assert calls == [default]  # the default world once, shared by every dial's level 1
    assert len(study) == 2 * len(dials.STUDY_DIALS)
    level1, level0 = study[study["level"] == 1.0], study[study["level"] == 0.0]
    assert level1["measured"].all() and (level1["n_seeds"] == len(dials.SEEDS["smoke"])).all()
    assert not level0["measured"].any() and level0["headroom"].isna().all()
    assert (level0["n_seeds"] == 0).all()
    # without stored_only every world is measured (trained through the store when missing)
    calls.clear()
    full = dials.dial_table(cfg)
    assert full["measured"].all() and len(calls) == len(dials.STUDY_DIALS) + 1
    # ``trained`` limits the worlds that may be trained; the others stay stored-only
    calls.clear()
    some = dials.dial_table(cfg, trained=("label_meaning",))
    lm0 = dials.dial_world(cfg, "label_meaning", 0.0)
    assert calls == [default, (lm0.heterogeneity, lm0.dials)]
    measured = some[some["level"] == 0.0].set_index("dial")["measured"]
    assert measured["label_meaning"] and not measured.drop("label_meaning").any()


def test_the_chapters_dial_study_is_both_tables_stored_only_unless_full(monkeypatch):
    import types

    from unichest_lib import evidence
    from unichest_lib.evidence import dials

    asked = []
    cells, classes = pd.DataFrame({"t": ["cells"]}), pd.DataFrame({"t": ["classes"]})
    monkeypatch.setattr(dials, "dial_table", lambda c, stored_only, progress, trained:
                        asked.append(("dials", stored_only, trained)) or cells)
    monkeypatch.setattr(dials, "meaning_by_class", lambda c, stored_only, progress: asked.append(
        ("by_class", stored_only)) or classes)
    monkeypatch.delenv("UNICHEST_RECORD", raising=False)
    monkeypatch.setattr(dials, "cell_stored", lambda *a, **k: False)  # whatever this cache has
    monkeypatch.setattr(dials.replay, "study_recorded", lambda *a, **k: False)
    cfg = resolve("smoke")
    for full in (False, True):
        asked.clear()
        study = evidence.dial_study(cfg, full=full)
        assert study.ran and {k: v["t"].iloc[0] for k, v in study.tables.items()} == {
            "dials": "cells", "by_class": "classes"}
        assert asked == [("dials", not full, dials.TRAINED_DIALS["smoke"]),
                         ("by_class", not full)]
    real = evidence.dial_study(types.SimpleNamespace(data="real.yml"), full=True)
    assert not real.ran and real.tables == {} and "embedded world" in real.note


def test_cell_stored_is_false_on_an_empty_store(tmp_path):
    from unichest_lib.evidence.dials import cell_stored

    assert not cell_stored(resolve("smoke", cache_dir=str(tmp_path)))
