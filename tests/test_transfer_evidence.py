"""Transfer with its baselines (issue #15 item 4, issue #32 item 2): linear probe and
fine-tuning of UniChest's encoder, the Conquer encoder and a random initialisation, over seeds
and several label subsets per seed, with paired intervals, the probe's C chosen on training
rows, the feature geometry and a disk cache (unichest_lib.evidence.transfer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from unichest_lib import evidence
from unichest_lib.book import tables
from unichest_lib.config import ConfigError, resolve
from unichest_lib.evaluation import finetune
from unichest_lib.evidence import claims
from unichest_lib.evidence import transfer as T

from helpers import fake_dataset

PORTIONS = finetune.PORTIONS
PRETRAINED = ("UniChest", "Conquer only")


def _fake_data(monkeypatch):
    """Both transfer splits from :func:`fake_dataset` (two classes, one patient per image)."""
    def fake(cfg, sources, split, *, with_masks=False):
        return fake_dataset(n=120 if split == "train" else 60, seed=0 if split == "train" else 1)

    monkeypatch.setattr(T, "make_dataset", fake)
    return fake(None, None, "train"), fake(None, None, "test")


def _fake_probs(encoder, seed, protocol, portion, subset=0, n=60):
    """Made-up test probabilities; the random encoder copies UniChest's linear probe at 1 %."""
    if encoder == T.RANDOM and (protocol, portion) == ("linear probe", 0.01):
        encoder = "UniChest"
    if encoder == "Conquer only":  # Divide freezes the encoder: one set of weights
        encoder = "UniChest"
    tag = f"{encoder}/{seed}/{protocol}/{portion}/{subset}".encode()
    return np.random.default_rng(list(tag)).random((n, 2))


GEO = {T.GEOMETRY[0]: 1.3, T.GEOMETRY[1]: 0.9, T.GEOMETRY[2]: 0.98}


@pytest.fixture()
def faked(monkeypatch):
    tr, te = _fake_data(monkeypatch)

    def predictions(cfg, encoder, seed, *, source, protocols, portions, epochs, subsets,
                    feature, progress):
        return {(pr, float(p)): [T.Fit(_fake_probs(encoder, seed, pr, float(p), j),
                                       np.full(2, 0.1 if pr == "linear probe" else np.nan))
                                 for j in range(T.n_subsets(cfg, p, subsets))]
                for pr in protocols for p in portions}

    def geometry(cfg, encoder, seed, *, source, feature, progress):
        return {k: v * (1 + seed) if encoder == T.RANDOM else v for k, v in GEO.items()}

    monkeypatch.setattr(T, "transfer_predictions", predictions)
    monkeypatch.setattr(T, "feature_geometry", geometry)
    return tr, te


def test_the_table_has_every_row_and_the_means_are_seed_means_of_sklearn_aucs(faked):
    _, te = faked
    cfg = resolve("smoke")
    seeds = (0, 1, 2)
    df = evidence.transfer_table(cfg, seeds=seeds, n_boot=50, subsets=3)
    scores = df[df["kind"] == "score"]
    assert len(scores) == 3 * 2 * 3
    assert not scores.duplicated(["encoder", "protocol", "portion"]).any()
    assert set(scores["encoder"]) == set(T.ENCODERS)
    assert set(scores["protocol"]) == set(T.PROTOCOLS)
    assert set(scores["portion"]) == set(PORTIONS) and (scores["n_seeds"] == 3).all()
    n = scores.groupby("portion")["n_train"].first()
    assert n[1.0] == 120 and n[0.01] < n[0.1] < 120
    assert (scores["n_subsets"] == scores["portion"].map({0.01: 3, 0.1: 3, 1.0: 1})).all()
    assert (scores["lo"] <= scores["mean"]).all() and (scores["mean"] <= scores["hi"]).all()
    y = te.table.labels

    def macro(probs):
        return np.mean([roc_auc_score(y[:, k], probs[:, k]) for k in range(2)])

    for _, r in scores.iterrows():  # the slow, obvious reference: sklearn per class and subset
        aucs = np.array([[macro(_fake_probs(r["encoder"], s, r["protocol"], r["portion"], j))
                          for j in range(r["n_subsets"])] for s in seeds])
        assert r["mean"] == pytest.approx(aucs.mean(), abs=1e-12)  # mean of the seed means
        assert r["per_seed"] == ", ".join(f"{v:.3f}" for v in aucs.mean(1))
        assert r["below_half"] == pytest.approx((aucs < 0.5).mean())
        if r["n_subsets"] > 1:
            assert r["subset_sd"] == pytest.approx(aucs.std(1, ddof=1).mean())
        assert (r["C"] == 0.1) if r["protocol"] == "linear probe" else np.isnan(r["C"])
    diffs = df[df["kind"] == "difference"]
    assert len(diffs) == 3 * 2 * 3
    assert set(diffs["encoder"]) == {f"{e} − {T.RANDOM}" for e in PRETRAINED} | {
        "UniChest − Conquer only"}
    assert diffs["verdict"].isin(["holds", "contradicted", "inconclusive"]).all()
    same = diffs[diffs["encoder"] == "UniChest − Conquer only"]
    assert (same[["mean", "lo", "hi"]] == 0).all().all()
    geo = df[df["kind"] == "geometry"].set_index(["encoder", "setting"])
    assert len(geo) == 3 * len(T.GEOMETRY)
    assert geo.loc[("UniChest", T.GEOMETRY[0]), "mean"] == pytest.approx(1.3)
    assert geo.loc[(T.RANDOM, T.GEOMETRY[0]), "mean"] == pytest.approx(1.3 * 2)  # seeds 0-2
    rand_pr = geo.loc[(T.RANDOM, T.GEOMETRY[0])]
    assert rand_pr["lo"] < 2.6 < rand_pr["hi"] and rand_pr["per_seed"] == "1.300, 2.600, 3.900"
    assert list(tables.transfer_geometry(df).columns) == list(T.ENCODERS)
    facts = tables.transfer_facts(df)
    assert facts["pre_pr"] == pytest.approx(1.3) and facts["rand_pr"] == pytest.approx(2.6)
    assert facts["subsets"] == 3 and facts["n10"] == n[0.1]
    at10 = scores.set_index(["encoder", "protocol", "portion"]).loc[("UniChest", "linear probe", 0.1)]
    assert facts["pre_below10"] == at10["below_half"] and facts["pre_sd10"] == at10["subset_sd"]
    wide = tables.transfer_wide(df)
    assert wide.shape == (2 * 3, 3 + 3) and list(wide.columns[:3]) == list(T.ENCODERS)
    assert list(wide.index.get_level_values("protocol")[::3]) == list(T.PROTOCOLS)
    first = scores.iloc[0]
    assert wide.iloc[0, 0] == f"{first['mean']:.3f} [{first['lo']:.3f}, {first['hi']:.3f}]"


def test_paired_differences_are_the_difference_of_the_rows_on_shared_resamples(faked):
    cfg = resolve("smoke")
    df = evidence.transfer_table(cfg, seeds=(0, 1), n_boot=80)
    key = ["protocol", "portion"]
    scores = df[df["kind"] == "score"].set_index(["encoder"] + key)["mean"]
    for _, r in df[df["kind"] == "difference"].iterrows():
        enc, control = r["encoder"].split(" − ")
        expected = scores[enc, r["protocol"], r["portion"]] - scores[control, r["protocol"],
                                                                     r["portion"]]
        assert r["mean"] == pytest.approx(expected, abs=1e-12)
    # the random encoder copies UniChest's 1 % probe: identical on every resample, so the
    # paired difference is exactly zero, interval included (unpaired resamples would spread)
    same = df[(df["encoder"] == f"UniChest − {T.RANDOM}") & (df["protocol"] == "linear probe")
              & (df["portion"] == 0.01)].iloc[0]
    assert same["mean"] == same["lo"] == same["hi"] == 0.0
    ms, _ = T.transfer_measures(cfg, seeds=(0, 1), n_boot=80)
    assert ms["UniChest", "fine-tune", 1.0].reps.std() > 0


def test_the_random_encoder_is_seeded_and_is_unichests_own_draw():
    from unichest_lib.model import UniChest

    cfg = resolve("smoke")
    state = lambda m: m.image_encoder.state_dict()  # noqa: E731
    a, a2, b = (state(T.random_encoder(cfg, s)) for s in (3, 3, 4))
    assert all(torch.equal(a[k], a2[k]) for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    own = state(UniChest(cfg.replace(seed=3), ("nodule", "effusion")))
    assert own.keys() == a.keys() and all(torch.equal(own[k], a[k]) for k in a)


def _recording(monkeypatch, calls):
    """Replace the two trainers (and the encoder pass) by fakes that record their rows."""
    def probe(x_tr, y_tr, m_tr, x_te, seed, *, groups, chosen):
        calls.append(("linear probe", seed, len(x_tr)))
        chosen.update({k: 0.01 for k in range(y_tr.shape[1])})
        return np.full((len(x_te), y_tr.shape[1]), 0.5)

    def tune(model, cfg, train_ds, test_ds, idx, *, epochs):
        calls.append(("fine-tune", cfg.seed, np.asarray(idx)))
        return np.full((len(test_ds), len(test_ds.classes)), 0.25)

    monkeypatch.setattr(finetune, "logistic_scores", probe)
    monkeypatch.setattr(finetune, "fine_tune_scores", tune)
    monkeypatch.setattr(finetune, "probe_features",
                        lambda model, ds, cfg, feature: np.zeros((len(ds), 4)))


def test_label_subsets_are_stratified_and_differ_between_subsets_and_seeds(monkeypatch, tmp_path):
    tr, _ = _fake_data(monkeypatch)
    calls = []
    _recording(monkeypatch, calls)
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    subsets = {}
    for seed in (0, 1):
        T.transfer_predictions(cfg, T.RANDOM, seed, protocols=("fine-tune",),
                               portions=(0.1, 1.0), subsets=3, progress=False)
        assert [c[1] for c in calls[-4:]] == [seed] * 4  # 3 subsets at 10 %, one at 100 %
        for j, (_, _, idx) in enumerate(calls[-4:-1]):
            subsets[seed, j] = idx
        assert len(calls[-1][2]) == len(tr)
    drawn = [tuple(v) for v in subsets.values()]
    assert len(set(drawn)) == len(drawn)  # no two subsets alike, within or across seeds
    y = tr.table.labels
    for (seed, j), idx in subsets.items():
        assert np.array_equal(idx, finetune.stratified_subset(y, 0.1, (seed, j)))
        for pattern in {tuple(r) for r in y}:  # every label pattern keeps its share, rounded up
            full = (y == pattern).all(1).sum()
            assert (y[idx] == pattern).all(1).sum() == max(1, int(np.ceil(0.1 * full)))


def test_predictions_and_the_chosen_c_are_cached_and_read_back_without_training(monkeypatch,
                                                                                 tmp_path):
    _, te = _fake_data(monkeypatch)
    calls = []
    _recording(monkeypatch, calls)
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    first = T.transfer_predictions(cfg, T.RANDOM, 0, progress=False)
    runs = sum(T.n_subsets(cfg, p) for p in PORTIONS)  # per protocol
    assert T.n_subsets(cfg, 1.0) == 1 and T.n_subsets(cfg, 0.1) == T.SUBSETS["smoke"]
    assert len(calls) == 2 * runs and set(first) == {(p, q) for p in T.PROTOCOLS for q in PORTIONS}
    assert len(list((tmp_path / "evidence" / "transfer").glob("*.npz"))) == 2 * runs
    assert all((f.C == 0.01).all() for f in first["linear probe", 1.0])
    assert all(np.isnan(f.C).all() for f in first["fine-tune", 1.0])

    def boom(*a, **k):
        raise AssertionError("trained although the predictions are cached")

    for name in ("logistic_scores", "fine_tune_scores"):
        monkeypatch.setattr(finetune, name, boom)
    monkeypatch.setattr(T, "random_encoder", boom)
    again = T.transfer_predictions(cfg, T.RANDOM, 0, progress=False)
    assert all(np.array_equal(a.probs, b.probs) and np.array_equal(a.C, b.C, equal_nan=True)
               and b.probs.shape == (len(te), 2) for k in first for a, b in zip(first[k], again[k]))
    with pytest.raises(AssertionError, match="trained"):  # other epochs: another cache entry
        T.transfer_predictions(cfg, T.RANDOM, 0, protocols=("fine-tune",), epochs=3,
                               progress=False)
    with pytest.raises(AssertionError, match="trained"):  # another seed: another encoder
        T.transfer_predictions(cfg, T.RANDOM, 1, protocols=("linear probe",), progress=False)
    with pytest.raises(AssertionError, match="trained"):  # another feature: another probe
        T.transfer_predictions(cfg, T.RANDOM, 0, protocols=("linear probe",),
                               feature="projected", progress=False)
    with pytest.raises(AssertionError, match="trained"):  # one more subset: one more run
        T.transfer_predictions(cfg, T.RANDOM, 0, protocols=("linear probe",), portions=(0.1,),
                               subsets=T.SUBSETS["smoke"] + 1, progress=False)


def test_bad_encoder_protocol_and_epochs_fail_clearly(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown encoder"):
        T.transfer_predictions(cfg, "ImageNet", 0)
    with pytest.raises(ConfigError, match="protocol"):
        T.transfer_predictions(cfg, T.RANDOM, 0, protocols=("zero-shot",))
    with pytest.raises(ConfigError, match="epochs"):
        T.transfer_predictions(cfg, T.RANDOM, 0, epochs=0)
    with pytest.raises(ConfigError, match="portions"):
        T.transfer_predictions(cfg, "UniChest", 0, portions=(10,))  # before any training
    with pytest.raises(ConfigError, match="feature"):
        T.transfer_predictions(cfg, "UniChest", 0, feature="pixels")


def test_the_recorded_study_is_named_after_the_protocol_version(monkeypatch):
    from unichest_lib.evidence import replay

    names = []

    def recorded_study(name, cfg, fn, *args, **kwargs):
        names.append(name)
        return pd.DataFrame(), None

    monkeypatch.setattr(replay, "recorded_study", recorded_study)
    T.transfer_table(resolve("smoke"), seeds=(0,))
    assert T.STUDY == "transfer-v" + T.VERSION.rsplit("/", 1)[1]  # a new version, a new name
    assert names and names[0].startswith(T.STUDY + "-")


@pytest.mark.slow
def test_end_to_end_at_smoke(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    df = evidence.transfer_table(cfg, progress=False)
    scores = df[df["kind"] == "score"]
    assert len(scores) == 18 and scores["mean"].between(0, 1).all()
    assert (scores["n_seeds"] == len(evidence.SEEDS["smoke"])).all()
    # Divide freezes the image encoder: UniChest's is its Conquer's, so the rows agree
    uni, con = (scores[scores["encoder"] == e].reset_index(drop=True) for e in PRETRAINED)
    assert np.array_equal(uni["mean"], con["mean"])
    a, b = (evidence.variant_model(cfg, e, 0, progress=False).image_encoder.state_dict()
            for e in PRETRAINED)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the ledger's transfer claim shows the 100 % linear-probe difference of this table
    claim = claims.transfer_vs_random(cfg, progress=False)
    row = df[(df["encoder"] == f"UniChest − {T.RANDOM}") & (df["protocol"] == "linear probe")
             & (df["portion"] == 1.0)].iloc[0]
    assert claim["mean"] == pytest.approx(row["mean"], abs=1e-12)
    geo = df[df["kind"] == "geometry"]
    assert len(geo) == 3 * len(T.GEOMETRY) and geo["mean"].notna().all()


def test_a_mixed_verdict_names_every_setting_with_its_word():
    same = {"probe 1 %": "inconclusive", "probe 10 %": "inconclusive"}
    assert claims.mixed_verdict(same) == "inconclusive"
    mixed = {"probe 1 %": "inconclusive", "probe 10 %": "contradicted",
             "fine-tune 100 %": "holds", "probe 100 %": "contradicted"}
    assert claims.mixed_verdict(mixed) == ("holds in fine-tune 100 %; contradicted in probe "
                                           "10 %, probe 100 %; inconclusive in probe 1 %")


def test_the_transfer_claim_gives_a_verdict_per_setting_from_the_chapters_table(faked):
    cfg = resolve("smoke")
    df = evidence.transfer_table(cfg, seeds=(0, 1, 2), n_boot=60)
    res = claims.transfer_vs_random(cfg, seeds=(0, 1, 2), n_boot=60, progress=False)
    diffs = df[(df["kind"] == "difference") & (df["encoder"] == f"UniChest − {T.RANDOM}")]
    assert len(res["grid"]) == len(diffs) == 2 * 3
    per = {claims.setting_label(r["protocol"], r["portion"]): r for _, r in diffs.iterrows()}
    assert set(res["grid"]) == set(per)
    for label, s in res["grid"].items():  # the same numbers and verdicts as chapter 04's table
        assert s["mean"] == pytest.approx(per[label]["mean"], abs=1e-12)
        assert s["verdict"] == per[label]["verdict"]
    head = per[claims.setting_label(*claims.TRANSFER_HEADLINE)]
    assert res["mean"] == pytest.approx(head["mean"], abs=1e-12)
    assert res["verdict"] == claims.mixed_verdict({k: r["verdict"] for k, r in per.items()})
    assert "UniChest − Conquer only: largest |difference| 0.000" in res["detail"]
    assert all(label in res["detail"] for label in per)


def test_the_ledger_reads_the_transfer_claim_under_its_protocols_name(monkeypatch):
    from unichest_lib.evidence import ledger, replay

    names = []

    def recorded_study(name, *args, **kwargs):
        names.append(name)
        return None, None

    monkeypatch.setattr(replay, "recorded_study", recorded_study)
    for key in ("transfer_vs_random", "gate_routes"):
        ledger._claim(resolve("smoke"), key, progress=False, train=False)
    assert names == [f"claim-transfer_vs_random-{T.STUDY}", "claim-gate_routes"]
    assert T.STUDY in str(ledger.CLAIM_VERSIONS["transfer_vs_random"])
