"""One optimiser step of the trainer: it returns the loss terms of the batch as computed
*before* the update, as plain floats, and it does update the trainable parameters and the
learning-rate schedule (and nothing frozen)."""

from __future__ import annotations

import tempfile

import torch

from unichest_lib.data import collate
from unichest_lib.model import UniChest
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg


def test_train_step_returns_the_terms_before_the_update_and_updates_the_model():
    cfg = tiny_cfg(warmup_steps=2)
    data, val = synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)
    model = UniChest(cfg, data.classes)
    batch = collate([data[i] for i in range(cfg.batch_size)])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, "conquer", out, progress=False).bind(model, data, val)
        with torch.no_grad():
            terms = trainer.loss_terms(model(batch["image"], texts=batch["text"]), batch)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        lr0 = trainer.optimizer.param_groups[0]["lr"]
        values = trainer.train_step(batch)
    assert set(values) == set(terms) and all(isinstance(v, float) for v in values.values())
    for k, v in terms.items():  # the numbers of this batch, before the update
        assert abs(values[k] - float(v)) < 1e-4 * max(1.0, abs(values[k])), k
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert trainer.step == 1 and trainer.optimizer.param_groups[0]["lr"] != lr0  # warm-up moved
