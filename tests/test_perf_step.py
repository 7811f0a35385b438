"""The training step reads its loss terms back to the host in ONE transfer (a single
device synchronisation per step on a GPU), and returns the same numbers as the terms."""

from __future__ import annotations

import sys
import tempfile

import torch

from unichest_lib import train
from unichest_lib.model import UniChest

from test_train import SOURCES, synth, tiny_cfg


def test_train_step_reads_the_loss_terms_back_once(monkeypatch):
    cfg = tiny_cfg()
    data, val = synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)
    model = UniChest(cfg, data.classes)
    from unichest_lib.data import collate

    batch = collate([data[i] for i in range(cfg.batch_size)])
    with tempfile.TemporaryDirectory() as out:
        trainer = train.Trainer(cfg, "conquer", model, data, val, out, progress=False)
        terms = trainer.loss_terms(model(batch["image"], texts=batch["text"]), batch)
        calls = {"float": 0, "item": 0, "tolist": 0}
        for name, attr in (("float", "__float__"), ("item", "item"), ("tolist", "tolist")):
            orig = getattr(torch.Tensor, attr)

            def counting(self, *a, _orig=orig, _name=name, **k):
                # count reads made by the library itself (torch's optimiser reads its own
                # host-side step counters with .item(), which is no device sync)
                if "unichest_lib" in sys._getframe(1).f_code.co_filename:
                    calls[_name] += 1
                return _orig(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, attr, counting)
        values = trainer.train_step(batch)
        monkeypatch.undo()
    assert calls == {"float": 0, "item": 0, "tolist": 1}, calls
    assert set(values) == set(terms) and all(isinstance(v, float) for v in values.values())
    # the returned loss is the one computed on this batch before the update
    assert abs(values["loss"] - float(terms["loss"])) < 1e-4 * max(1.0, abs(values["loss"]))
