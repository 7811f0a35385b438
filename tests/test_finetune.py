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
    df = FT.linear_probe(PixelModel(), CFG, source="siim", portions=(0.05, 1.0))
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
