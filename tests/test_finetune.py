"""Linear probe and fine-tuning (paper Table II; MGCA's linear-probe protocol)."""

import numpy as np
import pytest
import torch
from torch import nn

from unichest_lib.config import resolve
from unichest_lib.evaluation import finetune as FT

from helpers import FAKE_CLASSES as CLASSES
from helpers import fake_dataset

CFG = resolve("smoke", amp=False, eval_batch_size=16, batch_size=8)


def test_stratified_subset_keeps_every_pattern_and_its_share():
    rng = np.random.default_rng(0)
    y = (rng.random((1000, 2)) < [0.1, 0.5]).astype(float)
    y[:50, 1] = np.nan
    idx = FT.stratified_subset(y, 0.1, seed=3)
    assert np.array_equal(idx, np.unique(idx)) and 95 <= len(idx) <= 110
    codes = lambda a: {tuple(r) for r in np.where(np.isnan(a), 2, a)}  # noqa: E731
    assert codes(y[idx]) == codes(y)
    for pattern in codes(y):  # each pattern keeps its share (rounded up)
        full = (np.where(np.isnan(y), 2, y) == pattern).all(1).sum()
        part = (np.where(np.isnan(y[idx]), 2, y[idx]) == pattern).all(1).sum()
        assert part == max(1, int(np.ceil(0.1 * full)))
    assert np.array_equal(idx, FT.stratified_subset(y, 0.1, seed=3))
    assert not np.array_equal(idx, FT.stratified_subset(y, 0.1, seed=4))
    assert len(FT.stratified_subset(y, 1.0, 0)) == 1000
    with pytest.raises(ValueError, match="portion"):
        FT.stratified_subset(y, 0.0, 0)


class PixelEncoder(nn.Module):
    """Patches = 8x8 average-pooled pixels; a linear map of them separates the fake classes."""

    def forward(self, images):
        grid = nn.functional.avg_pool2d(images, 8)  # (B, 1, 8, 8)
        feats = torch.cat([grid[..., :4].sum((2, 3)), grid[..., 4:].sum((2, 3))], 1)
        return feats[:, None, :].repeat(1, 4, 1), (2, 2)


class PixelModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_encoder = PixelEncoder()
        self.w = nn.Parameter(torch.zeros(1))


@pytest.fixture()
def patched(monkeypatch):
    def fake(cfg, sources, split, *, with_masks=False):
        return fake_dataset(n=200 if split == "train" else 60, seed=0 if split == "train" else 1)

    monkeypatch.setattr(FT, "make_dataset", fake)


def test_linear_probe_on_separable_features_is_near_perfect(patched):
    df = FT.linear_probe(PixelModel(), CFG, source="siim", portions=(0.05, 1.0),
                         feature="projected")  # the fake encoder has no backbone
    assert {"protocol", "portion", "n_train"} <= set(df.columns)
    macro = df[df["metric"] == "aAUC"].set_index("portion")["value"]
    assert macro[1.0] > 0.95
    n = df.groupby("portion")["n_train"].first()
    assert n[1.0] == 200 and n[0.05] < 20


def test_fine_tune_runs_and_leaves_the_pretrained_encoder_untouched(patched):
    from unichest_lib.model import UniChest

    model = UniChest(CFG, CLASSES).start_divide()
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    df = FT.fine_tune(model, CFG, source="siim", portions=(0.1,), epochs=1)
    for k, v in model.image_encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    vals = df[df["defined"]]["value"]
    assert len(vals) == 3 * 4 and vals.between(0, 1).all()
    expected = len(FT.stratified_subset(fake_dataset(n=200).table.labels, 0.1, CFG.seed))
    assert (df["protocol"] == "fine_tune").all() and (df["n_train"] == expected).all()


# ---- the probe's regularisation, its input and the geometry of that input (issue #32) --------
def _signal_in_noise(n, seed, width=120):
    """One informative column among ``width`` noise columns; labels from the first."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)]
    x = rng.normal(size=(n, width))
    x[:, 0] += 1.5 * y
    return x, y


def test_inner_folds_are_patient_disjoint_and_stratified():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(30), 2)  # two images per patient
    y = np.repeat(rng.integers(0, 2, 30), 2)
    folds = FT.inner_folds(y, patients, seed=1)
    assert len(folds) == FT.INNER_FOLDS
    held = np.concatenate([b for _, b in folds])
    assert np.array_equal(np.sort(held), np.arange(60))  # every row held out once
    for a, b in folds:
        assert not set(patients[a]) & set(patients[b])
        assert set(y[a]) == {0, 1}
    few = np.r_[1, 1, np.zeros(10)]  # two positive patients: two folds at most
    assert len(FT.inner_folds(few, None, seed=0)) == 2
    assert FT.inner_folds(np.r_[1, np.zeros(10)], None, seed=0) == []  # one positive: no split


def test_choose_c_regularises_noise_and_falls_back_without_a_split():
    x, y = _signal_in_noise(40, seed=0)
    c, curve = FT.choose_c(x, y, seed=0)
    assert set(curve) == set(FT.C_GRID) and curve[c] == pytest.approx(max(curve.values()))
    assert c == min(k for k, v in curve.items() if v == pytest.approx(max(curve.values())))
    assert c <= 0.1  # 120 noise columns and 40 rows: the inner split asks for shrinkage
    x_new, y_new = _signal_in_noise(400, seed=1)
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    s = StandardScaler().fit(x)
    auc = {k: roc_auc_score(y_new, FT._fit(s.transform(x), y, k, 0).decision_function(
        s.transform(x_new))) for k in (c, 100.0)}
    assert auc[c] > auc[100.0]  # the chosen C generalises better than a weak penalty
    assert FT.choose_c(x[:5], np.r_[1, 0, 0, 0, 0], seed=0) == (FT.FALLBACK_C, {})


def test_the_probe_chooses_c_from_its_training_rows_alone():
    x, y = _signal_in_noise(40, seed=2)
    rng = np.random.default_rng(3)
    y2, m2 = y[:, None], np.ones((40, 1), bool)
    picked = []
    for x_te in (rng.normal(size=(7, 120)), 100 + rng.normal(size=(50, 120))):
        chosen = {}
        FT.logistic_scores(x, y2, m2, x_te, seed=0, chosen=chosen)
        picked.append(chosen[0])
    from sklearn.preprocessing import StandardScaler

    own = FT.choose_c(StandardScaler().fit_transform(x), y, seed=0)[0]
    assert picked == [own, own]  # the test rows never change the choice
    fixed = {}
    FT.logistic_scores(x, y2, m2, x[:3], seed=0, c=10.0, chosen=fixed)
    assert fixed == {0: 10.0}


def test_probe_features_read_the_backbone_and_the_projection_maps_it_to_the_mean_patch(patched):
    from unichest_lib.model import UniChest

    cfg = CFG.replace(channels_last=False)
    model = UniChest(cfg, CLASSES).eval()
    ds = fake_dataset(n=10)
    back = FT.probe_features(model, ds, cfg, "backbone")
    proj = FT.probe_features(model, ds, cfg, "projected")
    conv = model.image_encoder.proj
    assert back.shape == (10, conv.in_channels) and proj.shape == (10, cfg.embed_dim)
    w, b = conv.weight.detach()[:, :, 0, 0].numpy(), conv.bias.detach().numpy()
    np.testing.assert_allclose(back @ w.T + b, proj, rtol=1e-4, atol=1e-4)  # Ī = W x + b
    assert len(model.image_encoder.proj._forward_pre_hooks) == 0  # the hook is gone
    with pytest.raises(ValueError, match="feature"):
        FT.probe_features(model, ds, cfg, "pixels")


def test_feature_geometry_counts_directions_and_the_share_in_a_span():
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(4000, 8))
    one = rng.normal(size=(4000, 1)) * rng.normal(size=(1, 8))
    q = np.eye(8)[:2]  # the span of the first two axes
    g_iso, g_one = FT.feature_geometry(iso, iso, q), FT.feature_geometry(one, one, q)
    assert 7.5 < g_iso["participation_ratio"] <= 8 and g_iso["top_share"] < 0.2
    assert g_one["participation_ratio"] == pytest.approx(1, abs=1e-6)
    assert g_one["top_share"] == pytest.approx(1, abs=1e-6)
    assert g_iso["span_share"] == pytest.approx(2 / 8, abs=0.03)
    inside = iso * (np.arange(8) < 2)
    assert FT.feature_geometry(iso, inside, q)["span_share"] == pytest.approx(1.0)
