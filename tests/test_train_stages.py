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
    # a published run keeps its history but not its weights and optimiser state
    for stage in ("conquer", "divide"):
        run = store.artifact_dir(cfg, stage) / "run"
        assert sorted(p.name for p in run.iterdir()) == ["last.json"]
        hist = store.history(cfg, stage, progress=False)
        want = cfg.conquer_epochs if stage == "conquer" else cfg.divide_epochs
        assert not hist.empty and hist["epoch"].max() == want
    # asking again trains nothing; changing K reuses the Conquer artifact only
    before = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert store.divide_checkpoint(cfg, progress=False) == path
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == before
    k3 = cfg.replace(K=3)
    assert store.artifact_dir(k3, "conquer") == store.artifact_dir(cfg, "conquer")
    assert store.artifact_dir(k3, "divide") != store.artifact_dir(cfg, "divide")


def test_the_trainer_hands_eq5s_probability_mix_to_the_divide_loss(tmp_path):
    """With combine="probabilities" the Divide loss must see out["probs"] (Eq. 5 on
    probabilities); the trainer once filtered it out, so ASL scored the clipped logit."""
    from unichest_lib.model import UniChest
    from unichest_lib.training import keys, losses
    from unichest_lib.training.stages import init_from_conquer
    from unichest_lib.training.trainer import Trainer
    from helpers import SOURCES, synth, tiny_cfg

    cfg = tiny_cfg(K=2, combine="probabilities")
    train, val = synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 8, 32, 1)
    conquer = Trainer(cfg, "conquer", tmp_path / "c",
                      progress=False).fit(UniChest(cfg, train.classes), train, val)
    model = UniChest(cfg, train.classes)
    init_from_conquer(model, conquer.checkpoint)
    seen = []

    def spy(out, batch, c):
        seen.append(set(out))
        return losses.divide_loss(out, batch, c)

    Trainer(cfg, "divide", tmp_path / "d", progress=False, loss_fn=spy).fit(model, train, val)
    assert seen and all("probs" in keys_ for keys_ in seen)
    # runs trained before the fix are not served for this setting: the Divide key moved
    assert keys.divide_key(cfg) != keys.divide_key(cfg.replace(combine="scores"))
