"""Tests of unichest_lib.ablations, the report_text switch and the grid heatmap (fast:
no training; the chapter test runs the ablations end to end at the smoke profile)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from unichest_lib import ablations, data, figures
from unichest_lib.config import ConfigError, resolve
from unichest_lib.samples import SEP, MultiSourceDataset, SampleTable

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _table(sources=("mimic", "chestxray14")):
    classes = ("atelectasis", "effusion", "pneumonia")
    labels = np.array([[1, 0, 1], [0, 0, 0], [np.nan, 1, 0], [1, np.nan, np.nan]], np.float32)
    return SampleTable(classes=classes, sources=tuple(sources), labels=labels,
                       source_ids=np.array([0, 0, 1, 1]), patients=np.array(list("abcd"), object),
                       texts=["Small left effusion. No pneumonia.", "Normal chest.",
                              "effusion", "atelectasis"])


# ---- configuration ------------------------------------------------------------------------
def test_ablation_config_scales_images_and_keeps_a_floor():
    tut = resolve("tutorial")
    c = ablations.ablation_config(tut, 0.25, conquer_epochs=2)
    assert c.n_per_source == round(tut.n_per_source * 0.25) and c.conquer_epochs == 2
    tiny = ablations.ablation_config(tut, 0.01)
    assert tiny.n_per_source == ablations.MIN_IMAGES
    smoke = resolve("smoke")  # already below the floor: unchanged, never enlarged
    assert ablations.ablation_config(smoke, 0.5).n_per_source == smoke.n_per_source


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "half", True])
def test_ablation_config_rejects_bad_scale(bad):
    with pytest.raises(ConfigError, match="scale"):
        ablations.ablation_config(resolve("smoke"), bad)


def test_report_text_is_validated():
    assert resolve("smoke", report_text="labels").report_text == "labels"
    with pytest.raises(ConfigError, match="report_text"):
        resolve("smoke", report_text="reports")


def test_label_texts_replaces_only_report_sources_by_label_concatenation():
    ds = MultiSourceDataset(_table(), lambda i: np.zeros((8, 8), np.float32))
    data.label_texts(ds)
    # slow reference: observed positives joined by [SEP], "no finding" if none
    assert ds.table.texts[0] == SEP.join(["atelectasis", "pneumonia"])
    assert ds.table.texts[1] == "no finding"
    assert ds.table.texts[2:] == ["effusion", "atelectasis"]  # chestxray14 rows unchanged


# ---- validation before work ------------------------------------------------------------------
def test_grid_and_backbone_and_heterogeneity_reject_bad_values_before_training(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="K = 0"):
        ablations.lam_k_grid(cfg, [0, 2], [0.5])
    with pytest.raises(ConfigError, match="lambda"):
        ablations.lam_k_grid(cfg, [2], [1.5])
    with pytest.raises(ConfigError, match="backbones"):
        ablations.backbone_ablation(cfg, ["vgg16"])
    with pytest.raises(ConfigError, match="embedded"):
        ablations.heterogeneity_gain(cfg.replace(data="real.yaml"), [0.0])
    assert not (tmp_path / "artifacts").exists()


def test_cached_table_builds_once_per_key(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return pd.DataFrame({"K": [1, 2], "val_aAUC": [0.5, 0.75]})

    a = ablations.cached_table(cfg, "t", {"x": 1}, build)
    b = ablations.cached_table(cfg, "t", {"x": 1}, build)
    pd.testing.assert_frame_equal(a, b)
    assert len(calls) == 1
    ablations.cached_table(cfg, "t", {"x": 2}, build)  # other params: rebuilt
    ablations.cached_table(cfg.replace(K=2), "t", {"x": 1}, build)  # other config: rebuilt
    assert len(calls) == 3


# ---- figure -----------------------------------------------------------------------------------
def test_grid_heatmap_places_each_value_at_its_k_and_lambda():
    df = pd.DataFrame({"K": [1, 1, 2, 2], "lam": [0.25, 0.75, 0.25, 0.75],
                       "val_aAUC": [0.1, 0.2, 0.3, 0.4]})
    fig = figures.grid_heatmap(df.sample(frac=1.0, random_state=0))
    z = np.asarray(fig.data[0].z)
    assert list(fig.data[0].y) == ["1", "2"] and list(fig.data[0].x) == ["0.25", "0.75"]
    np.testing.assert_allclose(z, [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match="grid_heatmap"):
        figures.grid_heatmap(df.drop(columns="lam"))
