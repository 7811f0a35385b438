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


def test_every_head_is_scored_on_the_lesions_split_scores_sees(smoke_model):
    from unichest_lib.evaluation.grounding_references import MODEL, split_scores

    model, cfg = smoke_model
    lesions, heads = AD.head_split_scores(model, cfg, "chestxdet10", "valid")
    ref = split_scores(cfg, "chestxdet10", "valid", model=model)
    assert lesions[["class", "row", "patient"]].equals(ref.lesions[["class", "row", "patient"]])
    n_layers, n_heads = len(model.qn1.layers), model.qn1.layers[0].n_heads
    assert sorted(heads) == [(e, l, h) for e in range(1, model.cfg.K + 1) for l in range(n_layers)
                             for h in range(n_heads)]
    for s in heads.values():
        assert s["hit"].shape == (len(lesions),) and s["dice"].shape == (len(lesions), 101)
    # heads differ from one another (the maps are really per head, not the mean repeated)
    assert len({s["dice"].tobytes() for s in heads.values()}) > 1


def test_with_one_network_layer_and_head_the_head_is_the_mixed_map():
    from unichest_lib.data.label_spaces import union_classes
    from unichest_lib.evaluation.grounding_references import MODEL, split_scores
    from unichest_lib.training.checkpoints import build_model

    cfg = resolve("smoke", cache_dir=str(ROOT / ".cache" / "unichest"), n_heads=1,
                  n_decoder_layers=1, amp=False)  # float32: the kept maps are float32
    torch.manual_seed(0)
    model = build_model(cfg, union_classes(cfg.sources, cfg.data), "conquer").eval()
    lesions, heads = AD.head_split_scores(model, cfg, "chestxdet10", "test")
    ref = split_scores(cfg, "chestxdet10", "test", model=model).scores[MODEL]
    assert list(heads) == [(1, 0, 0)]
    assert np.array_equal(heads[1, 0, 0]["hit"], ref["hit"])
    assert np.allclose(heads[1, 0, 0]["dice"], ref["dice"], atol=1e-6)


def test_the_head_is_chosen_by_macro_validation_pointing_first_on_ties():
    import pandas as pd

    from unichest_lib.evidence.grounding_routes import choose_head, head_label

    lesions = pd.DataFrame({"class": ["a", "a", "a", "b"]})
    hit = lambda *v: {"hit": np.asarray(v, float)}  # noqa: E731
    # per class, then macro: (1,0,0) a 2/3, b 0 -> 1/3; (1,0,1) a 0, b 1 -> 1/2 (fewer hits)
    heads = {(1, 0, 0): hit(1, 1, 0, 0), (1, 0, 1): hit(0, 0, 0, 1), (2, 1, 0): hit(0, 0, 1, 1)}
    assert choose_head(lesions, heads) == ((2, 1, 0), pytest.approx(2 / 3))
    heads[1, 0, 1] = hit(0, 1, 1, 1)  # ties (2, 1, 0): the first in order wins
    assert choose_head(lesions, heads)[0] == (1, 0, 1)
    assert head_label((1, 0, 1)) == "QN1 layer 1 head 2"
    assert head_label((3, 1, 0)) == "expert 2 layer 2 head 1"


@pytest.mark.slow
def test_the_head_route_at_smoke_is_paired_with_chapter_04s_grounding_table():
    from unichest_lib.evidence import grounding_routes as GR
    from unichest_lib.evidence.grounding_measures import grounding_baseline_table

    cfg = resolve("smoke", cache_dir=str(ROOT / ".cache" / "unichest"))
    study = GR.head_study(cfg, progress=False)
    t = study.tables["head"].set_index(["class", "metric", "method"])
    ref = grounding_baseline_table(cfg, progress=False).set_index(["class", "metric", "method"])
    for cls, metric in {(c, m) for c, m, _ in t.index}:
        mixed, head = t.loc[(cls, metric, GR.MIXED)], t.loc[(cls, metric, GR.HEAD)]
        assert mixed["mean"] == pytest.approx(ref.loc[(cls, metric, "UniChest"), "mean"])
        diff = t.loc[(cls, metric, f"{GR.HEAD} − {GR.MIXED}")]
        assert diff["mean"] == pytest.approx(head["mean"] - mixed["mean"], abs=1e-9)
        assert 0 <= head["mean"] <= 1
    assert t["heads"].iloc[0].count("seed ") == 2
    assert set(t["verdict"][t["kind"] == "difference"]) <= {
        "holds", "inconclusive", "contradicted", ""}


@pytest.mark.parametrize("chosen", [32, 16])
def test_the_stride_study_adds_the_per_class_table_only_for_another_stride(monkeypatch, chosen):
    import pandas as pd

    from unichest_lib.evidence import grounding_routes as GR

    cfg = resolve("smoke")
    table = pd.DataFrame({"stride": [32, 16], "chosen": [chosen == 32, chosen == 16]})
    monkeypatch.setattr(GR, "strides_on", lambda *a, **k: True)
    monkeypatch.setattr(GR, "stride_table", lambda *a, **k: table)
    asked = []
    baseline_table = lambda c, **k: asked.append(c.output_stride) or pd.DataFrame()  # noqa: E731
    baseline_table.available = lambda c, **k: False  # neither stored nor recorded
    monkeypatch.setattr(GR, "grounding_baseline_table", baseline_table)
    study = GR.stride_study(cfg, progress=False)
    assert study.values["chosen"] == chosen and "chosen" not in study.tables and not asked
    study = GR.stride_study(cfg, full=True, progress=False)  # the ledger measures it
    assert ("chosen" in study.tables) == (chosen != 32) and asked == ([16] if chosen == 16 else [])
