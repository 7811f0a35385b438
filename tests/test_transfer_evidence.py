"""Transfer with its baselines (issue #15 item 4): linear probe and fine-tuning of UniChest's
encoder, the Conquer encoder and a random initialisation, over seeds and label subsets, with
paired intervals and a disk cache (unichest_lib.evidence.transfer)."""

from __future__ import annotations

import numpy as np
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


def _fake_probs(encoder, seed, protocol, portion, n=60):
    """Made-up test probabilities; the random encoder copies UniChest's linear probe at 1 %."""
    if encoder == T.RANDOM and (protocol, portion) == ("linear probe", 0.01):
        encoder = "UniChest"
    tag = f"{encoder}/{seed}/{protocol}/{portion}".encode()
    return np.random.default_rng(list(tag)).random((n, 2))


@pytest.fixture()
def faked(monkeypatch):
    tr, te = _fake_data(monkeypatch)

    def predictions(cfg, encoder, seed, *, source, protocols, portions, epochs, progress):
        return {(pr, float(p)): _fake_probs(encoder, seed, pr, float(p))
                for pr in protocols for p in portions}

    monkeypatch.setattr(T, "transfer_predictions", predictions)
    return tr, te


def test_the_table_has_every_row_and_the_means_are_seed_means_of_sklearn_aucs(faked):
    _, te = faked
    cfg = resolve("smoke")
    seeds = (0, 1, 2)
    df = evidence.transfer_table(cfg, seeds=seeds, n_boot=50)
    scores = df[df["kind"] == "score"]
    assert len(scores) == 3 * 2 * 3
    assert not scores.duplicated(["encoder", "protocol", "portion"]).any()
    assert set(scores["encoder"]) == set(T.ENCODERS)
    assert set(scores["protocol"]) == set(T.PROTOCOLS)
    assert set(scores["portion"]) == set(PORTIONS) and (scores["n_seeds"] == 3).all()
    n = scores.groupby("portion")["n_train"].first()
    assert n[1.0] == 120 and n[0.01] < n[0.1] < 120
    assert (scores["lo"] <= scores["mean"]).all() and (scores["mean"] <= scores["hi"]).all()
    y = te.table.labels
    for _, r in scores.iterrows():  # the slow, obvious reference: sklearn per class and seed
        per_seed = [np.mean([roc_auc_score(y[:, j], _fake_probs(r["encoder"], s, r["protocol"],
                                                                r["portion"])[:, j])
                             for j in range(2)]) for s in seeds]
        assert r["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    diffs = df[df["kind"] == "difference"]
    assert len(diffs) == 2 * 2 * 3
    assert set(diffs["encoder"]) == {f"{e} − {T.RANDOM}" for e in PRETRAINED}
    assert diffs["verdict"].isin(["holds", "contradicted", "inconclusive"]).all()
    wide = tables.transfer_wide(df)
    assert wide.shape == (2 * 3, 3 + 2) and list(wide.columns[:3]) == list(T.ENCODERS)
    assert list(wide.index.get_level_values("protocol")[::3]) == list(T.PROTOCOLS)
    first = scores.iloc[0]
    assert wide.iloc[0, 0] == f"{first['mean']:.3f} [{first['lo']:.3f}, {first['hi']:.3f}]"


def test_paired_differences_are_the_difference_of_the_rows_on_shared_resamples(faked):
    cfg = resolve("smoke")
    df = evidence.transfer_table(cfg, seeds=(0, 1), n_boot=80)
    key = ["protocol", "portion"]
    scores = df[df["kind"] == "score"].set_index(["encoder"] + key)["mean"]
    for _, r in df[df["kind"] == "difference"].iterrows():
        enc = r["encoder"].split(" − ")[0]
        expected = scores[enc, r["protocol"], r["portion"]] - scores[T.RANDOM, r["protocol"],
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
    def probe(x_tr, y_tr, m_tr, x_te, seed):
        calls.append(("linear probe", seed, len(x_tr)))
        return np.full((len(x_te), y_tr.shape[1]), 0.5)

    def tune(model, cfg, train_ds, test_ds, idx, *, epochs):
        calls.append(("fine-tune", cfg.seed, np.asarray(idx)))
        return np.full((len(test_ds), len(test_ds.classes)), 0.25)

    monkeypatch.setattr(finetune, "logistic_scores", probe)
    monkeypatch.setattr(finetune, "fine_tune_scores", tune)
    monkeypatch.setattr(T, "pooled_features", lambda model, ds, cfg: np.zeros((len(ds), 4)))


def test_label_subsets_are_stratified_and_differ_between_seeds(monkeypatch, tmp_path):
    tr, _ = _fake_data(monkeypatch)
    calls = []
    _recording(monkeypatch, calls)
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    subsets = {}
    for seed in (0, 1):
        T.transfer_predictions(cfg, T.RANDOM, seed, protocols=("fine-tune",),
                                      portions=(0.1,), progress=False)
        (_, used_seed, idx), = calls[-1:]
        assert used_seed == seed
        subsets[seed] = idx
    assert not np.array_equal(subsets[0], subsets[1])
    y = tr.table.labels
    for seed, idx in subsets.items():
        assert np.array_equal(idx, finetune.stratified_subset(y, 0.1, seed))
        for pattern in {tuple(r) for r in y}:  # every label pattern keeps its share, rounded up
            full = (y == pattern).all(1).sum()
            assert (y[idx] == pattern).all(1).sum() == max(1, int(np.ceil(0.1 * full)))


def test_predictions_are_cached_and_read_back_without_training(monkeypatch, tmp_path):
    _, te = _fake_data(monkeypatch)
    calls = []
    _recording(monkeypatch, calls)
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    first = T.transfer_predictions(cfg, T.RANDOM, 0, progress=False)
    assert len(calls) == 2 * 3 and set(first) == {(p, q) for p in T.PROTOCOLS for q in PORTIONS}
    assert len(list((tmp_path / "evidence" / "transfer").glob("*.npz"))) == 6

    def boom(*a, **k):
        raise AssertionError("trained although the predictions are cached")

    for name in ("logistic_scores", "fine_tune_scores"):
        monkeypatch.setattr(finetune, name, boom)
    monkeypatch.setattr(T, "random_encoder", boom)
    again = T.transfer_predictions(cfg, T.RANDOM, 0, progress=False)
    assert all(np.array_equal(first[k], again[k]) and again[k].shape == (len(te), 2)
               for k in first)
    with pytest.raises(AssertionError, match="trained"):  # other epochs: another cache entry
        T.transfer_predictions(cfg, T.RANDOM, 0, protocols=("fine-tune",), epochs=3,
                                      progress=False)
    with pytest.raises(AssertionError, match="trained"):  # another seed: another encoder
        T.transfer_predictions(cfg, T.RANDOM, 1, protocols=("linear probe",),
                                      progress=False)


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
    # the ledger's transfer claim is the 100 % linear-probe difference of this table
    claim = claims.transfer_vs_random(cfg, progress=False).summary()
    row = df[(df["encoder"] == f"UniChest − {T.RANDOM}") & (df["protocol"] == "linear probe")
             & (df["portion"] == 1.0)].iloc[0]
    assert claim["mean"] == pytest.approx(row["mean"], abs=1e-12)
