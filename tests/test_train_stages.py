"""Conquer then Divide end to end on the embedded world, through the artifact store (smoke)."""

from __future__ import annotations

import json

import pytest

from unichest_lib.training import checkpoints, store
from unichest_lib.config import resolve


@pytest.mark.slow
def test_store_trains_conquer_then_divide_once_and_reuses_them(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path), sources="chestxray14,vindr",
                  val_source="chestxray14", image_size=32, max_steps_per_epoch=2, amp=False)
    path = store.divide_checkpoint(cfg, progress=False)
    for stage in ("conquer", "divide"):
        assert store.is_valid(cfg, stage)
        manifest = json.loads((store.artifact_dir(cfg, stage) / "manifest.json").read_text())
        assert manifest["key"] == store.key(cfg, stage)
        assert 0.0 <= manifest["best_metric"] <= 1.0
    # the Divide checkpoint was selected on the validation split and holds a Divide model
    meta = checkpoints.read_meta(path)
    assert meta["stage"] == "divide" and meta["config"]["K"] == cfg.K
    model = store.load_model(cfg, "divide", progress=False)
    assert model.stage == "divide" and not model.training
    # asking again trains nothing; changing K reuses the Conquer artifact only
    before = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert store.divide_checkpoint(cfg, progress=False) == path
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == before
    k3 = cfg.replace(K=3)
    assert store.artifact_dir(k3, "conquer") == store.artifact_dir(cfg, "conquer")
    assert store.artifact_dir(k3, "divide") != store.artifact_dir(cfg, "divide")
