"""``cfg.query_text`` (issue #15): what the class queries say in training — names (the
paper), descriptions (MedKLIP) or an ensemble of phrasings drawn per step — checked against
the text encoder's own embeddings of those texts, through the trainer and the evaluation."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from unichest_lib.config import QUERY_TEXTS, Config, ConfigError, resolve
from unichest_lib.data import descriptions
from unichest_lib.evaluation import classification as E
from unichest_lib.model import query_text as QT
from unichest_lib.training import store
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, fake_dataset, synth, tiny_cfg


@pytest.fixture(scope="module")
def data():
    return synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)


@pytest.fixture(scope="module")
def build(data):
    """A fresh Conquer-stage model of each ``query_text`` (the text encoder is loaded once)."""
    from unichest_lib.model import UniChest

    protos = {qt: UniChest(tiny_cfg(query_text=qt), data[0].classes) for qt in QUERY_TEXTS}
    return lambda qt: copy.deepcopy(protos[qt])


def captured_queries(model, run):
    """The (c, d) queries QN¹ received during ``run()``."""
    seen = []
    hook = model.qn1.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        run()
    finally:
        hook.remove()
    return seen


# ---- the option ------------------------------------------------------------------------------
def test_bad_value_is_a_clear_error():
    with pytest.raises(ConfigError, match="query_text.*'names'.*'name', 'description', 'ensemble'"):
        resolve("smoke", query_text="names")
    with pytest.raises(ValueError, match="query_text 'labels' is not valid"):
        QT.entries(["nodule"], "labels")


def test_default_keys_are_unchanged_and_other_values_name_new_runs():
    base = resolve("smoke")
    assert base.query_text == "name"
    for stage in ("conquer", "divide", "continued"):
        same = store.key(resolve("smoke", query_text="name"), stage)
        assert same == store.key(base, stage)
        others = {store.key(base.replace(query_text=qt), stage) for qt in QUERY_TEXTS}
        assert len(others) == len(QUERY_TEXTS)
    assert Config.from_dict({k: v for k, v in base.to_dict().items()
                             if k != "query_text"}).query_text == "name"  # older records


def test_every_class_has_a_description_and_the_same_number_of_phrasings():
    from unichest_lib.data.labels import ALL_CLASSES

    for c in ALL_CLASSES:
        v = descriptions.variants(c)
        assert len(v) == len(descriptions.TEMPLATES) and v[0] == c
        assert v[1] == descriptions.describe(c) and len(set(v)) == len(v)


def test_query_groups_broadcast_single_texts_and_refuse_ragged_tuples():
    assert QT.query_groups(["a", ("b", "c")]) == [["a", "b"], ["a", "c"]]
    assert QT.query_groups(["a", "b"]) == [["a", "b"]]
    with pytest.raises(ValueError, match="different lengths"):
        QT.query_groups([("a", "b"), ("c", "d", "e")])


def test_draw_is_seeded_and_covers_every_phrasing():
    kw = dict(seed=3, stage="conquer")
    a = QT.draw(24, 6, step=7, **kw)
    assert np.array_equal(a, QT.draw(24, 6, step=7, **kw))  # a resumed run draws the same
    assert not np.array_equal(a, QT.draw(24, 6, step=8, **kw))
    assert not np.array_equal(a, QT.draw(24, 6, step=7, seed=4, stage="conquer"))
    assert not np.array_equal(a, QT.draw(24, 6, step=7, seed=3, stage="divide"))
    draws = np.stack([QT.draw(24, 6, step=s, **kw) for s in range(200)])
    for j in range(24):  # every class meets every phrasing, about equally often
        counts = np.bincount(draws[:, j], minlength=6)
        assert counts.min() > 15 and counts.sum() == 200


# ---- what the model queries with -------------------------------------------------------------
def test_description_model_trains_on_the_description_embeddings(build, data, tmp_path):
    model = build("description")
    desc = descriptions.describe_all(model.classes)
    trainer = Trainer(tiny_cfg(query_text="description", conquer_epochs=1), "conquer", tmp_path,
                      progress=False).bind(model, *data)
    trainer._warm_text_cache()
    batch = next(iter(trainer.train_loader))
    seen = captured_queries(model, lambda: trainer.train_step(batch))
    assert len(seen) == 1 and seen[0].shape == (len(model.classes), model.cfg.embed_dim)
    fresh = build("description")  # the weights the step started from
    with torch.no_grad():
        want = fresh.encode_text(desc)
    assert torch.allclose(seen[0], want, atol=1e-6)
    assert not torch.allclose(seen[0], fresh.encode_text(list(model.classes)), atol=1e-3)


def test_ensemble_model_trains_on_the_drawn_phrasing_and_tests_on_the_mean(build, data, tmp_path):
    model = build("ensemble")
    cfg = tiny_cfg(query_text="ensemble", conquer_epochs=1)
    groups = model.query_groups()
    assert len(groups) == len(descriptions.TEMPLATES) and groups[0] == list(model.classes)
    with torch.no_grad():
        table = torch.stack([model.encode_text(g) for g in groups])  # (V, c, d)
    trainer = Trainer(cfg, "conquer", tmp_path, progress=False).bind(model, *data)
    trainer._warm_text_cache()
    batch = next(iter(trainer.train_loader))
    pick = model.query_pick("conquer", 0)
    seen = captured_queries(model, lambda: trainer.train_step(batch))
    cols = torch.arange(len(model.classes))
    assert torch.allclose(seen[0], table[pick, cols], atol=1e-6)
    assert len(set(pick.tolist())) > 1  # the classes do not all draw one phrasing
    fresh = build("ensemble")
    with torch.no_grad():
        assert torch.allclose(fresh.class_queries(), table.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="query_pick"):
        fresh(torch.rand(2, 1, 32, 32), query_pick=torch.zeros(3, dtype=torch.long))


def test_name_model_has_no_draw_and_queries_by_name(build):
    model = build("name")
    assert model.query_pick("conquer", 0) is None and model.query_groups() == [list(model.classes)]
    with torch.no_grad():
        assert torch.equal(model.class_queries(), model.class_queries(list(model.classes)))


def test_trainer_pools_the_phrasings_as_a_reloaded_model_does(build, data, tmp_path):
    model = build("ensemble")
    Trainer(tiny_cfg(query_text="ensemble"), "conquer", tmp_path,
            progress=False).bind(model, *data)._warm_text_cache()
    reloaded = build("ensemble")
    for g in reloaded.query_groups():
        cached = torch.stack([model.text_encoder.cached()[t] for t in g])
        assert torch.equal(cached, reloaded.text_encoder.pooled(g))


@pytest.mark.parametrize("qt", QUERY_TEXTS)
def test_a_tiny_conquer_and_divide_run_with_each_value(qt, build, data, tmp_path):
    from unichest_lib.training.stages import init_from_conquer

    cfg = tiny_cfg(query_text=qt, conquer_epochs=1, divide_epochs=1)
    r = Trainer(cfg, "conquer", tmp_path / "c", progress=False).fit(build(qt), *data)
    h = r.history[r.history.split == "train"]
    assert len(h) == 2 and np.isfinite(h["loss"]).all()
    model = build(qt)
    init_from_conquer(model, r.checkpoint)
    d = Trainer(cfg, "divide", tmp_path / "d", progress=False).fit(model, *data)
    assert np.isfinite(d.history["loss"].dropna()).all()
    assert len(model._query_cache) <= len(descriptions.TEMPLATES)  # one per group, not per draw


# ---- evaluation --------------------------------------------------------------------------------
def test_query_plan_keeps_the_models_own_queries_and_adds_the_ensemble_mode():
    own = ["d-a", "d-nodule"]
    texts, cols = E.query_plan(("a", "nodule"), ["nodule", "tuberculosis"], "name", own)
    assert texts == ["d-a", "nodule", "tuberculosis"] and cols == [1, 2]
    texts, cols = E.query_plan(("a", "nodule"), ["tuberculosis"], "ensemble", own)
    assert texts[:2] == own and texts[2] == descriptions.variants("tuberculosis")
    with pytest.raises(ValueError, match="2 classes"):
        E.query_plan(("a", "nodule"), ["nodule"], "name", ["x"])


def test_plan_queries_average_the_phrasings_and_keep_single_texts(build):
    model = build("name")
    plan = ["nodule", descriptions.variants("tuberculosis")]
    with torch.no_grad():
        q = E.plan_queries(model, plan)
        assert torch.equal(q[0], model.class_queries(["nodule", plan[1][0]])[0])  # not averaged
        want = model.encode_text(list(plan[1])).mean(0)
    assert torch.allclose(q[1], want, atol=1e-6)


def test_in_domain_queries_as_trained(build, monkeypatch):
    model = build("description")
    seen = []
    monkeypatch.setattr(model, "mean_queries", lambda t: seen.append(t))
    real = model.class_queries
    monkeypatch.setattr(model, "class_queries", lambda t=None: seen.append(list(t)) or real(t))
    ds = fake_dataset(n=4, classes=("nodule", "pneumothorax"))
    E.predict(model, ds, resolve("smoke", amp=False, eval_batch_size=8), by=None)
    assert seen[-1] == model.query_entries() and E.own_mode(model) == "description"


# ---- the study ---------------------------------------------------------------------------------
def test_the_study_is_each_values_zero_shot_auc_and_its_paired_difference(monkeypatch):
    from unichest_lib.book import tables
    from unichest_lib.evidence import query_study
    from unichest_lib.evidence.measures import Measure

    calls = []
    value = {"name": 0.55, "description": 0.6, "ensemble": 0.7}

    def fake(cfg, name, sources, *, by, seen, seeds, n_boot, progress):
        calls.append((cfg.query_text, by, tuple(sources), seen, name))
        base = value[cfg.query_text] + (0.01 if by == "ensemble" else 0) + 0.1 * len(sources)
        reps = base + np.linspace(-0.02, 0.02, 30)[None, :] * np.ones((len(seeds), 1))
        cls = pd.DataFrame({"class": ["tuberculosis"], "n": [10], "n_pos": [3], "kept": [True],
                            "source": [sources[0]]})
        return Measure(np.full(len(seeds), base), reps, dict(classes=cls))

    monkeypatch.setattr(query_study, "macro_measure", fake)
    cfg = resolve("smoke")
    t = query_study.query_text_table(cfg, modes=("name", "ensemble"), seeds=(0, 1), n_boot=30,
                                     progress=False)
    assert set(t["source"]) == {"shenzhen", "padchest", "mean"}
    assert len(t) == 3 * 2 * 3 and all(c[3] is False and c[4] == "UniChest" for c in calls)
    row = t.set_index(["query_text", "by", "source"]).loc[("ensemble", "ensemble", "shenzhen")]
    assert row["mean"] == pytest.approx(0.81) and row["vs_name"] == pytest.approx(0.15)
    assert row["vs_lo"] == pytest.approx(0.15) == row["vs_hi"]  # paired: the noise cancels
    auc, vs = tables.query_text_views(t)
    assert list(auc.columns) == list(QUERY_TEXTS) and len(vs.columns) == 2
    with pytest.raises(ValueError, match="modes"):
        query_study.query_text_table(cfg, modes=("names",))
    with pytest.raises(ValueError, match="values"):
        query_study.query_text_table(cfg, values=("labels",))


def test_the_chapter_runs_the_study_when_asked_or_when_its_runs_are_stored(tmp_path, monkeypatch):
    from unichest_lib import evidence
    from unichest_lib.evidence import ledger, query_study

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = resolve("tutorial", cache_dir=str(tmp_path))
    assert not query_study.query_text_on(cfg)  # off at tutorial, nothing stored: never trains
    assert query_study.query_text_on(cfg, True) and query_study.query_text_on(resolve("smoke"))
    stored = []
    monkeypatch.setattr(store, "is_valid", lambda c, stage: stored.append(
        (c.query_text, c.seed, stage)) or True)
    assert query_study.query_text_on(cfg)
    assert sorted(stored) == sorted((v, sd, "divide") for v in QUERY_TEXTS
                                    for sd in evidence.SEEDS["tutorial"])


def test_the_chapters_study_says_why_it_did_not_run(tmp_path, monkeypatch):
    from unichest_lib import evidence
    from unichest_lib.evidence import ledger, query_study

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = resolve("tutorial", cache_dir=str(tmp_path))
    off = evidence.query_text_study(cfg)
    assert not off.ran and off.tables == {} and off.note.startswith("Not in this build.")
    assert ledger.HOW_TO_RUN in off.note
    assert not (tmp_path / "artifacts").exists()  # nothing was trained
    monkeypatch.setattr(query_study, "query_text_table", lambda c, progress=True: "table")
    on = evidence.query_text_study(cfg, full=True)
    assert on.ran and on.tables == {"query_text": "table"} and on.note == ""
    monkeypatch.setattr(query_study, "zero_shot_sources", lambda c: [])
    none = evidence.query_text_study(cfg, full=True)
    assert not none.ran and none.note.startswith("No downstream source has a class")


def test_the_study_scores_the_stored_runs(tmp_path):
    from unichest_lib.evidence import claims, measures, query_study

    cfg = resolve("smoke", cache_dir=str(tmp_path), image_size=32, max_steps_per_epoch=2,
                  amp=False)
    t = query_study.query_text_table(cfg, ("name", "description"), ("description",), seeds=(0,),
                                     n_boot=20, progress=False)
    for _, row in t.iterrows():
        srcs = claims.zero_shot_sources(cfg) if row["source"] == "mean" else [row["source"]]
        m = measures.macro_measure(cfg.replace(query_text=row["query_text"]), "UniChest", srcs,
                                   by="description", seen=False, seeds=(0,), n_boot=20,
                                   progress=False)
        assert row["mean"] == pytest.approx(m.points.mean(), nan_ok=True)
    d = t[t["query_text"] == "description"].set_index("source")
    n = t[t["query_text"] == "name"].set_index("source")
    assert np.allclose(d["vs_name"], d["mean"] - n["mean"], equal_nan=True)
