"""The evidence layer: matched controls as stored runs, split sizes, the claims ledger's
bookkeeping (replicates, kept classes, verdicts) checked against slow references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from unichest_lib import evidence
from unichest_lib.book import tables
from unichest_lib.config import ConfigError, resolve
from unichest_lib.data import make_dataset
from unichest_lib.evaluation import stats
from unichest_lib.evidence import claims, ledger, measures, variants
from unichest_lib.model import UniChest
from unichest_lib.training import checkpoints, keys, losses, stages, store


# ---- configuration and world -----------------------------------------------------------------
@pytest.mark.parametrize("name,value", [("scl_weight", -0.1), ("gate", "softmax"), ("gate_input", "ln"),
                                        ("n_test", -1), ("n_valid", -5)])
def test_new_settings_are_validated_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        resolve("smoke", **{name: value})


def test_evaluation_splits_are_sized_on_their_own_and_patient_disjoint(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path), n_per_source=40, n_valid=30, n_test=70,
                  image_size=32)
    sizes, patients = {}, {}
    for split in ("train", "valid", "test"):
        ds = make_dataset(cfg, ["chexpert"], split)
        sizes[split] = len(ds)
        patients[split] = set(ds.table.patients)
    assert sizes["test"] >= 70 and sizes["valid"] >= 30
    assert sum(sizes.values()) == 40 + 30 + 70
    # whole patients only: overshoot is less than one patient's images
    assert sizes["test"] < 70 + 12 and sizes["valid"] < 30 + 12
    assert not (patients["train"] & patients["test"]) and not (patients["valid"] & patients["test"])
    assert not (patients["train"] & patients["valid"])
    # more test images do not take images from training
    bigger = cfg.replace(n_test=140)
    assert len(make_dataset(bigger, ["chexpert"], "train")) >= sizes["train"] - 12


def test_variant_configs_change_one_thing(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    assert variants.variant_config(cfg, "one source").sources == (cfg.val_source,)
    assert variants.variant_config(cfg, "K = 1", 3).K == 1
    assert variants.variant_config(cfg, "K = 1", 3).seed == 3
    assert variants.variant_config(cfg, "no L_SCL").scl_weight == 0.0
    assert variants.variant_config(cfg, "equal weights").gate == "uniform"
    with pytest.raises(ConfigError, match="unknown variant"):
        variants.variant_config(cfg, "UniChest++")
    # Divide-only settings share the Conquer artifact; the continued run has its own key
    for name in ("K = 1", "no L_SCL", "equal weights"):
        v = variants.variant_config(cfg, name)
        assert keys.key(v, "conquer") == keys.key(cfg, "conquer")
        assert keys.key(v, "divide") != keys.key(cfg, "divide")
    assert keys.key(cfg, "continued") not in (keys.key(cfg, "conquer"), keys.key(cfg, "divide"))
    assert keys.key(cfg.replace(divide_epochs=3), "continued") != keys.key(cfg, "continued")


# ---- the controls in the model and the loss ----------------------------------------------------
def _divide_model(**kw):
    cfg = resolve("smoke", image_size=32, amp=False, dropout=0.0, **kw)
    model = UniChest(cfg, ("a", "b", "c")).start_divide()
    return cfg, model.eval()


def test_uniform_gate_weights_every_expert_equally_and_has_no_projection():
    cfg, model = _divide_model(K=4, gate="uniform")
    x = torch.rand(5, 1, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out["gate"], torch.full((5, 3), 1 / 3))
    assert "gate_proj" not in out
    s1, s_exp = out["scores"][:, 0], out["scores"][:, 1:]
    expected = cfg.lam * s1 + (1 - cfg.lam) * s_exp.mean(1)
    assert torch.allclose(out["logits"], expected, atol=1e-6)


def test_scl_weight_scales_only_the_source_contrastive_term():
    torch.manual_seed(0)
    out = {"image_emb": torch.randn(6, 8), "text_emb": torch.randn(6, 8),
           "logits": torch.randn(6, 3), "gate_proj": torch.randn(6, 4, requires_grad=True)}
    batch = {"labels": (torch.rand(6, 3) > 0.5).float(), "mask": torch.ones(6, 3, dtype=torch.bool),
             "source": torch.tensor([0, 0, 1, 1, 2, 2])}
    full = losses.divide_loss(out, batch, resolve("smoke"))
    off = losses.divide_loss(out, batch, resolve("smoke", scl_weight=0.0))
    assert full["scl_loss"] > 0 and torch.isclose(full["scl_loss"], off["scl_loss"])
    assert torch.isclose(full["loss"] - off["loss"], full["scl_loss"])
    off["loss"].backward()
    assert out["gate_proj"].grad is None or torch.count_nonzero(out["gate_proj"].grad) == 0


@pytest.mark.slow
def test_continued_run_starts_from_conquer_and_trains_the_encoder(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path), sources="chestxray14,vindr",
                  val_source="chestxray14", image_size=32, max_steps_per_epoch=2, amp=False,
                  n_valid=0, n_test=0)
    conquer = store.conquer_checkpoint(cfg, progress=False)
    path = store.continued_checkpoint(cfg, progress=False)
    meta = checkpoints.read_meta(path)
    assert meta["stage"] == "conquer" and meta["extra"]["stage"] == "continued"
    assert meta["extra"]["run_key"].endswith(checkpoints.read_meta(conquer)["sha256"])
    a = checkpoints.load(conquer).state_dict()
    b = checkpoints.load(path).state_dict()
    changed = [k for k in a if k.startswith("image_encoder") and a[k].dtype.is_floating_point
               and not torch.equal(a[k], b[k])]
    assert changed, "the continued run must keep training the image encoder"
    with pytest.raises(checkpoints.CheckpointError, match="starts from a Conquer"):
        stages.continue_conquer(cfg, store.divide_checkpoint(cfg, progress=False),
                                tmp_path / "x", progress=False)
    # one Conquer serves every K: the continued run asked for at another K still loads back
    # (it keeps the Conquer checkpoint's unused experts; found by chapter 03 run at K = 3)
    other = cfg.replace(K=cfg.K - 1, divide_epochs=2)
    model = store.load_model(other, "continued", progress=False)
    assert model.cfg.K == cfg.K
    assert checkpoints.read_meta(store.continued_checkpoint(other))["config"]["divide_epochs"] == 2


# ---- bootstrap bookkeeping ---------------------------------------------------------------------
def _scored(n=60, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.4).astype(float)
    y[:, 2] = 0
    y[:3, 2] = 1  # class 2: three positives only
    probs = np.clip(y * 0.3 + rng.random((n, c)) * 0.7, 0, 1)
    mask = rng.random((n, c)) > 0.1
    patients = np.repeat(np.arange(n // 2), 2)
    return measures.Scored(probs, y, mask, patients, ("a", "b", "c"), (True, False, True))


def test_class_auc_replicates_match_sklearn_and_a_weighted_loop():
    s = _scored()
    w = measures.patient_weights(s.patients, 5, "test")
    reps = measures.class_auc_replicates(s, w, [0, 1])
    for k, j in enumerate([0, 1]):
        m = s.mask[:, j]
        assert reps[0, k] == pytest.approx(roc_auc_score(s.labels[m, j], s.probs[m, j]))
        # replicate 1: the AUC of the sample with each image repeated w times
        rep = np.repeat(np.flatnonzero(m), w[0, m].astype(int))
        assert reps[1, k] == pytest.approx(roc_auc_score(s.labels[rep, j], s.probs[rep, j]))
    # masked entries do not count, whatever they hold
    s2 = _scored()
    s2.probs[~s2.mask] = 0.99
    s2.labels[~s2.mask] = 1 - s2.labels[~s2.mask]
    assert np.allclose(measures.class_auc_replicates(s2, w, [0, 1]), reps)


def test_kept_columns_flags_classes_with_few_positives_and_filters_seen():
    s = _scored()
    cols, table = measures.kept_columns(s, min_pos=5)
    assert cols == [0, 1]
    assert table.set_index("class").loc["c", "kept"] == False  # noqa: E712
    assert table.set_index("class").loc["c", "n_pos"] == int(s.labels[s.mask[:, 2], 2].sum())
    unseen, _ = measures.kept_columns(s, seen=False, min_pos=5)
    assert unseen == [1]


def test_differences_are_paired_replicate_by_replicate():
    rng = np.random.default_rng(1)
    shared = rng.normal(0.7, 0.05, (3, 400))  # test-set noise common to both models
    a = measures.Measure(np.array([0.70, 0.71, 0.69]), shared, {"what": "a"})
    b = measures.Measure(a.points + 0.02, shared + 0.02, {"what": "b"})
    d = b - a
    assert np.allclose(d.reps, 0.02) and np.allclose(d.points, 0.02)
    summ = d.summary()
    assert summ["verdict"] == "holds" and summ["lo"] > 0
    assert (a - b).summary()["verdict"] == "contradicted"


@pytest.mark.parametrize("intervals,verdict", [
    ([(-0.004, 0.006), (-0.008, 0.002)], "holds"),
    ([(-0.004, 0.006), (0.012, 0.03)], "contradicted"),
    ([(-0.004, 0.006), (-0.002, 0.015)], "inconclusive"),
])
def test_equivalence_verdict_over_a_grid(intervals, verdict):
    assert claims.equivalence_verdict(intervals, 0.01) == verdict


def test_expensive_claims_are_marked_not_run_without_training(tmp_path):
    cfg = resolve("tutorial", cache_dir=str(tmp_path))
    rows = evidence.ledger_rows(cfg, list(ledger.EXPENSIVE), full=False)
    assert (rows["verdict"] == ledger.NOT_RUN).all()
    assert not (tmp_path / "artifacts").exists()  # nothing was trained
    assert set(tables.ledger_table(rows)["verdict"]) == {ledger.NOT_RUN}


def test_world_only_claims_are_not_run_on_real_data_and_say_why(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path)).replace(data=str(tmp_path / "data.yml"))
    rows = evidence.ledger_rows(cfg, sorted(ledger.WORLD_ONLY), full=True)
    assert (rows["verdict"] == ledger.NOT_RUN).all()
    assert rows["detail"].str.contains("real data has none").all()
    assert not (tmp_path / "artifacts").exists()  # nothing was trained


def test_studies_that_did_not_run_share_one_note_naming_each_and_how_to_run_them():
    assert evidence.not_run_note({"the grid": True, "the dial study": True}) == ""
    note = evidence.not_run_note({"the grid": False, "the encoders": True, "the dials": False},
                                 "the dials need the embedded world")
    assert note.startswith("Not run in this build: the grid; the dials.")
    assert "the encoders" not in note
    assert ledger.HOW_TO_RUN in note and note.endswith("the dials need the embedded world.")


def test_full_ledger_switch_explicit_then_environment_then_profile_then_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    tut = resolve("tutorial", cache_dir=str(tmp_path))
    assert ledger.full_ledger(resolve("smoke", cache_dir=str(tmp_path)))
    assert not ledger.full_ledger(tut)
    assert ledger.full_ledger(tut, True) and not ledger.full_ledger(tut, False)
    monkeypatch.setenv(ledger.FULL_ENV, "1")
    assert ledger.full_ledger(tut) and not ledger.full_ledger(tut, False)
    monkeypatch.setenv(ledger.FULL_ENV, "0")
    assert not ledger.full_ledger(resolve("smoke", cache_dir=str(tmp_path)))
    monkeypatch.setenv(ledger.FULL_ENV, "maybe")
    with pytest.raises(ConfigError, match=ledger.FULL_ENV):
        ledger.full_ledger(tut)
    monkeypatch.delenv(ledger.FULL_ENV)
    # a build that measured every expensive claim leaves them in the cache: later builds show them
    seeds = evidence.SEEDS["tutorial"]
    for i, key in enumerate(ledger.EXPENSIVE):
        assert not ledger.full_ledger(tut)
        f = ledger._cache_file(tut, key, seeds)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text('{"mean": 0.1, "lo": 0.0, "hi": 0.2, "mde": 0.1, "n_seeds": 3, '
                     '"per_seed": [], "n_test": "", "flagged": "", "verdict": "holds"}')
    assert ledger.full_ledger(tut)
    rows = evidence.ledger_rows(tut, list(ledger.EXPENSIVE))
    assert (rows["verdict"] == "holds").all()


def test_the_plan_of_a_profile_reads_its_constants_and_resolves_the_full_ledger(tmp_path,
                                                                              monkeypatch):
    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    for profile in ("smoke", "tutorial", "paper"):
        cfg = resolve(profile, cache_dir=str(tmp_path))
        p = evidence.plan(cfg)
        assert p.seeds == tuple(evidence.SEEDS[profile])
        assert (p.n_boot, p.min_pos) == (measures.N_BOOT[profile], measures.MIN_POS[profile])
        assert p.grid == variants.GRID[profile]
        assert p.backbones == tuple(variants.BACKBONES[profile])
        assert p.full == ledger.full_ledger(cfg)
    tut = resolve("tutorial", cache_dir=str(tmp_path))
    assert evidence.plan(tut, True).full and not evidence.plan(tut, False).full
    assert evidence.plan(tut, True).train and not evidence.plan(tut, False).train


def test_a_recorded_ledger_shows_the_expensive_claims_but_trains_no_study(tmp_path, monkeypatch):
    # every expensive claim in the record turns the full ledger on for showing them; the
    # optional studies (chapter 05's dial worlds) must still train nothing unless asked
    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    monkeypatch.setattr(ledger.replay, "study_recorded", lambda cfg, name: True)
    tut = resolve("tutorial", cache_dir=str(tmp_path))
    p = evidence.plan(tut)
    assert p.full and not p.train
    monkeypatch.setenv(ledger.FULL_ENV, "1")
    assert evidence.plan(tut).train


def test_seen_unseen_table_groups_the_sources_that_have_such_classes(monkeypatch):
    calls = []

    def fake(cfg, names, sources, *, by, seen, mean_row, progress):
        calls.append((tuple(sources), seen, by, mean_row))
        return pd.DataFrame({"variant": [n for n in names for _ in sources],
                             "source": [s for _ in names for s in sources], "mean": 0.5})

    monkeypatch.setattr(measures, "variant_table", fake)
    cfg = resolve("smoke")
    t = evidence.seen_unseen_table(cfg, ["UniChest"], by="description")
    for (srcs, seen, by, mean_row), group in zip(calls, ("seen", "unseen")):
        assert list(srcs) == [s for s in cfg.downstream if measures.has_classes(cfg, s, seen)]
        assert by == "description" and not mean_row
        assert list(t[t["group"] == group]["source"]) == list(srcs)
    assert [c[1] for c in calls] == [True, False] and len(t) == sum(len(c[0]) for c in calls)
    calls.clear()
    none = evidence.seen_unseen_table(cfg, ["UniChest"], [])
    assert calls == [] and none.empty and "group" in none


def test_every_claim_has_a_chapter_and_a_paper_number():
    assert len(set(claims.CLAIM_KEYS)) == len(claims.CLAIMS) >= 11
    for c in claims.CLAIMS:
        assert c.chapter in ("02", "03", "04", "05") and c.paper and c.effect
    assert set(ledger.EXPENSIVE) <= set(claims.CLAIM_KEYS)
    assert stats.fmt_interval(0.0123, -0.004, 0.028) == "+0.012 [-0.004, +0.028]"


def test_a_divide_model_scores_the_same_from_stored_patches(tmp_path):
    from unichest_lib.evaluation import classification
    from unichest_lib.training import features as frozen

    cfg = resolve("smoke", image_size=32, amp=False, cache_dir=str(tmp_path), n_valid=0, n_test=0)
    ds = make_dataset(cfg, ["chexpert"], "test")
    model = UniChest(cfg, ds.classes).start_divide().eval()
    feats = frozen.encode(model, ds, cfg)
    a = classification.predict(model, ds, cfg).probs
    b = classification.predict(model, ds, cfg, features=feats).probs
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="stored features"):
        classification.predict(UniChest(cfg, ds.classes).eval(), ds, cfg, features=feats)
