"""Where the cross-attention goes (unichest_lib.evaluation.attention_diagnosis) and the
grounding diagnosis over seeds (unichest_lib.evidence.grounding_diagnosis)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import torch

from unichest_lib.config import resolve
from unichest_lib.evaluation import attention_diagnosis as AD
from unichest_lib.evaluation import grounding

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_map_scores_uniform_one_hot_and_avoiding_maps():
    frac = torch.tensor([[0.0, 0.5, 1.0, 0.0]])  # patch shares of lesion pixels; share 0.375
    uniform = torch.full((1, 4), 0.25)
    s = AD.map_scores(uniform, frac)
    assert s["entropy"].item() == pytest.approx(1.0)
    assert s["lift"].item() == pytest.approx(1.0)
    assert s["lesion_share"].item() == pytest.approx(0.375)
    on = AD.map_scores(torch.tensor([[0.0, 0.0, 1.0, 0.0]]), frac)
    assert on["entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert on["lift"].item() == pytest.approx(1.0 / 0.375)
    assert on["peak_in_lesion"].item() == 1.0
    off = AD.map_scores(torch.tensor([[0.5, 0.0, 0.0, 0.5]]), frac)
    assert off["lift"].item() == pytest.approx(0.0) and off["peak_in_lesion"].item() == 0.0
    assert off["entropy"].item() == pytest.approx(math.log(2) / math.log(4), rel=1e-5)


def test_histogram_features_are_shares_mean_and_std():
    x = torch.rand(3, 1, 8, 8)
    f = AD.histogram_features(x, bins=4)
    assert f.shape == (3, 6)
    assert np.allclose(f[:, :4].sum(1), 1.0)
    assert np.allclose(f[:, 4], x.flatten(1).mean(1).numpy(), atol=1e-6)
    ref = ((x.flatten(1) * 4).long().clamp_max(3) == 1).float().mean(1)
    assert np.allclose(f[:, 1], ref.numpy())


@pytest.fixture(scope="module")
def smoke_model():
    from unichest_lib.evidence.variants import variant_config, variant_model

    cfg = resolve("smoke", cache_dir=str(ROOT / ".cache" / "unichest"))
    return variant_model(cfg, "UniChest", 0, progress=False), variant_config(cfg, "UniChest", 0)


def test_per_head_maps_average_to_the_models_attention(smoke_model):
    model, cfg = smoke_model
    x = torch.rand(2, 1, cfg.image_size, cfg.image_size)
    with AD.per_head_attention() as calls, torch.no_grad():
        out = model.eval()(x, return_attention=True)
    layers = len(model.qn1.layers)
    assert len(calls) == 2 * layers  # QN1's layers, then the experts'
    maps = AD._networks(calls, layers)  # (B, networks, layers, heads, c, N)
    assert maps.shape[1] == out["attention"].shape[1]
    assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)
    mean = maps.mean((2, 3)).reshape(out["attention"].shape)
    assert torch.allclose(mean, out["attention"].float(), atol=1e-4)
    from unichest_lib.model import query
    assert query.attend.__name__ == "attend"  # restored on exit


def test_lesion_attention_has_a_row_per_lesion_map_and_a_mixed_row(smoke_model):
    model, cfg = smoke_model
    rows = AD.lesion_attention(model, cfg, "chestxdet10", "test")
    heats, truth, cls, _ = grounding.lesions(model, cfg, "chestxdet10", "test")
    mixed = rows[rows["network"] == "mixed"]
    assert len(mixed) == len(cls)
    n_maps = len(model.qn1.layers) * model.qn1.layers[0].n_heads * (1 + model.cfg.K - 1)
    assert len(rows) == len(cls) * (n_maps + 1)
    assert rows["entropy"].between(0, 1 + 1e-6).all() and (rows["lift"] >= 0).all()
    # the mixed map's patch peak agrees with the pointing game's pixel peak often, not always
    # (upsampling moves a peak inside its cell): check the mass only, against the heatmaps
    assert mixed["lesion_share"].to_numpy() == pytest.approx(
        truth.float().mean((1, 2)).numpy(), abs=0.02)


def test_global_probe_never_reads_test_labels(monkeypatch):
    cfg = resolve("smoke", cache_dir=str(ROOT / ".cache" / "unichest"))
    p1, te = AD.global_statistics_scores(cfg)
    real = AD.make_dataset

    def scrambled(c, sources, split, **kw):  # the test split's labels shuffled
        ds = real(c, sources, split, **kw)
        if split == "test":
            order = np.random.default_rng(0).permutation(len(ds))
            ds.table.labels = ds.table.labels[order]  # (the mask follows the labels)
        return ds

    monkeypatch.setattr(AD, "make_dataset", scrambled)
    p2, te2 = AD.global_statistics_scores(cfg)
    assert not np.array_equal(te.table.labels, te2.table.labels, equal_nan=True)
    assert np.array_equal(p1, p2)
    assert p1.shape == (len(te), len(te.classes))


@pytest.mark.slow
def test_grounding_diagnosis_at_smoke():
    from unichest_lib.evidence import attention_study as GD

    cfg = resolve("smoke", cache_dir=str(ROOT / ".cache" / "unichest"))
    study = GD.grounding_diagnosis(cfg, progress=False)
    att, glob = study.tables["attention"], study.tables["global"]
    assert list(att.columns) == list(GD.ATTENTION_COLUMNS)
    assert set(att["metric"]) == set(GD.MAP_METRICS) and (att["n_seeds"] == 2).all()
    ok = att.dropna(subset=["lo"])
    assert (ok["lo"] <= ok["mean"] + 1e-9).all() and (ok["mean"] <= ok["hi"] + 1e-9).all()
    assert set(glob["method"]) == {"grey-level histogram", "UniChest"}
    assert glob["mean"].between(0, 1).all()
    assert set(study.values) == set(GD.MAP_METRICS)


def test_the_stride_is_chosen_on_validation_with_the_papers_32_on_ties():
    import pandas as pd

    from unichest_lib.evidence.grounding_routes import choose_stride

    t = lambda v: pd.DataFrame({"stride": [32, 16, 8], "val_pointing": v})  # noqa: E731
    assert choose_stride(t([0.10, 0.30, 0.20])) == 16
    assert choose_stride(t([0.30, 0.30, 0.10])) == 32  # a tie keeps the paper's stride
    assert choose_stride(t([0.10, 0.30, 0.30])) == 16  # ... else the cheaper of the tied
    assert choose_stride(t([np.nan, np.nan, np.nan])) == 32
    assert choose_stride(t([np.nan, 0.1, np.nan])) == 16
