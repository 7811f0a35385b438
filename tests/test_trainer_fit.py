"""``Trainer(cfg, stage).fit(model, train_set, val_set)``: the call the chapters show.

Without an ``out_dir`` the run goes through the artifact store: trained once under its key,
then served (weights loaded into the reader's model, history returned). A model that is not
the one the stored run starts from, or other training data, is refused rather than silently
replaced by the stored weights.
"""

from __future__ import annotations

import pytest
import torch

from unichest_lib.config import resolve
from unichest_lib.data import make_dataset
from unichest_lib.training import checkpoints, store
from unichest_lib.training.stages import initial_model
from unichest_lib.training.trainer import Trainer, same_state


def _cfg(tmp_path):
    return resolve("smoke", cache_dir=str(tmp_path), sources="chestxray14,vindr",
                   val_source="chestxray14", image_size=32, max_steps_per_epoch=2, amp=False)


def _data(cfg):
    return (make_dataset(cfg, cfg.sources, "train"), make_dataset(cfg, [cfg.val_source], "valid"))



@pytest.mark.slow
def test_fit_trains_once_through_the_store_then_serves_the_same_run(tmp_path):
    cfg = _cfg(tmp_path)
    train, val = _data(cfg)
    model = initial_model(cfg, "conquer", train.classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = Trainer(cfg, "conquer", progress=False).fit(model, train, val)
    assert not first.served and first.checkpoint == store.conquer_checkpoint(cfg, progress=False)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items()), \
        "the reader's model must hold the trained weights"
    assert same_state(model, checkpoints.load(first.checkpoint))
    assert first.history["epoch"].max() == cfg.conquer_epochs
    # a second reader's fresh model is served the same run, nothing is retrained
    again = initial_model(cfg, "conquer", train.classes)
    second = Trainer(cfg, "conquer", progress=False).fit(again, train, val)
    assert second.served and same_state(again, model)
    assert second.history.equals(first.history)
    # the Conquer artifact serves every K (a Divide-only field): a model with other expert
    # shapes is served the same run, its inactive experts left as they were built
    k3 = cfg.replace(K=3)
    other_k = initial_model(k3, "conquer", train.classes)
    assert Trainer(k3, "conquer", progress=False).fit(other_k, train, val).served
    assert torch.equal(other_k.qn1.head2.weight, model.qn1.head2.weight)
    assert other_k.experts.n == 2
    # Divide: the reader builds the model from the stored Conquer checkpoint, fit serves/trains
    divide = initial_model(cfg, "divide", train.classes, first.checkpoint)
    result = Trainer(cfg, "divide", progress=False).fit(divide, train, val)
    assert result.checkpoint == store.divide_checkpoint(cfg, progress=False)
    assert divide.stage == "divide" and result.history["stage"].eq("divide").all()
    assert same_state(divide, store.load_model(cfg, "divide", progress=False))


@pytest.mark.slow
def test_fit_refuses_a_model_or_data_the_stored_run_does_not_start_from(tmp_path):
    cfg = _cfg(tmp_path)
    train, val = _data(cfg)
    changed = initial_model(cfg, "conquer", train.classes)
    with torch.no_grad():
        next(p for p in changed.parameters() if p.requires_grad).add_(1e-3)
    with pytest.raises(ValueError, match="not the one the stored conquer run"):
        Trainer(cfg, "conquer", progress=False).fit(changed, train, val)
    other = make_dataset(cfg, ["chestxray14"], "train")
    with pytest.raises(ValueError, match="train_set is not the training split"):
        Trainer(cfg, "conquer", progress=False).fit(
            initial_model(cfg, "conquer", other.classes), other, val)
    assert not store.is_valid(cfg, "conquer"), "a refused call trains nothing"


def test_fit_without_a_model_says_what_it_needs():
    cfg = resolve("smoke")
    with pytest.raises(TypeError, match=r"trainer.fit\(model, train_set, val_set\)"):
        Trainer(cfg, "conquer").fit()


def test_callbacks_add_validation_numbers_and_carry_the_run_key(tmp_path):
    from unichest_lib.training.features import RunCache
    from unichest_lib.training.trainer import EpochMetrics

    cfg = _cfg(tmp_path).replace(conquer_epochs=2, max_steps_per_epoch=1)
    train, val = _data(cfg)
    seen = []
    trainer = Trainer(cfg, "conquer", tmp_path / "run", progress=False, callbacks=[
        RunCache("the-run"), EpochMetrics(lambda model, epoch: seen.append(epoch) or
                                          {"epoch_twice": 2.0 * epoch})])
    result = trainer.fit(initial_model(cfg, "conquer", train.classes), train, val)
    valid = result.history[result.history["split"] == "valid"]
    assert seen == [1, 2] and valid["epoch_twice"].tolist() == [2.0, 4.0]
    assert checkpoints.read_meta(result.last_checkpoint)["extra"]["run_key"] == "the-run"
    with pytest.raises(checkpoints.CheckpointError, match="different configuration"):
        Trainer(cfg, "conquer", tmp_path / "run", progress=False, callbacks=[
            RunCache("another-run")]).fit(initial_model(cfg, "conquer", train.classes),
                                          train, val, resume=True)


def test_a_served_fit_builds_no_loader_and_no_optimiser(tmp_path, monkeypatch):
    from unichest_lib.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "_RUN_SERVER", lambda *a: calls.append(a) or "served")
    t = Trainer(resolve("smoke"), "conquer", progress=False)
    assert t.fit("model", "train", "val") == "served"
    assert calls == [(t, "model", "train", "val")]
    assert t.model is None and not hasattr(t, "optimizer") and not hasattr(t, "train_loader")
