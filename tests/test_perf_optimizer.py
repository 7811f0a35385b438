"""train.make_optimizer keeps PyTorch's default AdamW; the fused kernel (measured in
bench/bench_optimizer.py) performs the same updates as the per-tensor loop (also with channels-last weights when gradients and
moments share their strides, as in a fresh run; moments restored from a checkpoint do not,
hence make_optimizer keeps the loop for channels-last parameters).

Several *training* steps are not compared: Adam divides by sqrt(v), so last-bit differences
in the gradients of near-zero-gradient elements grow to lr-sized ones after a step or two.
Instead the gradients of one real backward pass are fed to both optimisers for several steps
(which exercises their moment state and bias correction)."""

from __future__ import annotations

import copy

import pytest
import torch

from unichest_lib import labels, train
from unichest_lib.config import resolve
from unichest_lib.model import UniChest


def _model(channels_last: bool):
    cfg = resolve("smoke", channels_last=channels_last)
    torch.manual_seed(0)
    m = UniChest(cfg, labels.union_classes(cfg.sources))
    if channels_last:
        m.image_encoder.to(memory_format=torch.channels_last)
    return cfg, m.train()


def _gradients(model):
    """Gradients of one real backward pass, as autograd lays them out."""
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(5, model.cfg.embed_dim, generator=g)
    x = torch.rand(4, 1, model.cfg.image_size, model.cfg.image_size, generator=g)
    model(x, queries=q)["logits"].square().mean().backward()
    grads = [None if p.grad is None else p.grad.clone() for p in model.trainable_parameters()]
    assert sum(gr is not None for gr in grads) > len(grads) // 2
    return grads


def _steps(model, opt, grads, steps=4):
    for _ in range(steps):
        for p, gr in zip(model.trainable_parameters(), grads):
            p.grad = None if gr is None else gr.clone()
        opt.step()
    return [p.detach() for p in model.trainable_parameters()]


def test_make_optimizer_holds_exactly_the_trainable_parameters_unfused():
    """The default (unfused) AdamW: resumed runs stay bit-identical (test_train_resume)."""
    cfg, m = _model(True)
    opt = train.make_optimizer(m, cfg)
    assert not opt.param_groups[0]["fused"]
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in m.trainable_parameters()}
    m.start_divide()
    opt = train.make_optimizer(m, cfg)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in m.trainable_parameters()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_adamw_matches_the_per_tensor_loop(channels_last):
    """Fused directly (not via make_optimizer) so the channels-last case is exercised too."""
    cfg, m = _model(channels_last)
    init = [p.detach().clone() for p in m.trainable_parameters()]
    grads = _gradients(m)
    if channels_last:  # the case the fused kernel depends on: gradient strides = parameter's
        conv = m.image_encoder.body[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert grads[[id(p) for p in m.trainable_parameters()].index(id(conv))].stride() == conv.stride()
    ref = copy.deepcopy(m)
    got = _steps(m, torch.optim.AdamW(m.trainable_parameters(), lr=cfg.lr,
                                      weight_decay=cfg.weight_decay, fused=True), grads)
    want = _steps(ref, torch.optim.AdamW(ref.trainable_parameters(), lr=cfg.lr,
                                         weight_decay=cfg.weight_decay, foreach=False), grads)
    diff = max(float((a - b).abs().max()) for a, b in zip(got, want))
    assert diff < 1e-6, f"fused AdamW differs from the loop by {diff}"
    moved = max(float((a - b).abs().max()) for a, b in zip(got, init))
    assert moved > 3 * cfg.lr  # four steps of size ~lr really happened
