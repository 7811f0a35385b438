"""The optimiser of both stages: AdamW over the stage's trainable parameters only, with
PyTorch's default (unfused) kernel, so resumed runs stay bit-identical
(``test_train_resume.py``; ``bench/bench_optimizer.py`` measured the fused kernel)."""

from __future__ import annotations

import pytest
import torch

from unichest_lib.config import resolve
from unichest_lib.data.label_spaces import union_classes
from unichest_lib.model import UniChest
from unichest_lib.training.optim import make_optimizer


def _model(channels_last: bool):
    cfg = resolve("smoke", channels_last=channels_last)
    torch.manual_seed(0)
    m = UniChest(cfg, union_classes(cfg.sources, cfg.data))
    if channels_last:
        m.image_encoder.to(memory_format=torch.channels_last)
    return cfg, m.train()


def test_make_optimizer_holds_exactly_the_trainable_parameters_unfused():
    cfg, m = _model(True)
    opt = make_optimizer(m, cfg)
    assert not opt.param_groups[0]["fused"]
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in m.trainable_parameters()}
    m.start_divide()
    opt = make_optimizer(m, cfg)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in m.trainable_parameters()}
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (cfg.lr,
                                                                                cfg.weight_decay)


def test_a_model_with_nothing_to_train_is_refused():
    cfg, m = _model(False)
    m.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(m, cfg)
