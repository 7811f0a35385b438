"""The optimiser and learning-rate schedule of both stages (paper Section IV-B: AdamW with
cosine annealing; the official code adds a linear warm-up, ``cfg.warmup_steps``).

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import math

import torch

from ..config import Config
from . import distributed


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine annealing to 0
    at ``total`` steps. A plain object so its state is JSON (``LambdaLR`` stores its
    ``__dict__``)."""

    def __init__(self, total: int, warmup: int = 0):
        self.total, self.warmup = int(total), int(warmup)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over ``model.trainable_parameters()`` only: frozen parameters get no state."""
    params = list(distributed.unwrap(model).trainable_parameters())
    if not params:
        raise ValueError("the model has no trainable parameters in this stage")
    # The fused CPU kernel made the AdamW step of the Divide heads ~4x faster but the whole
    # step only ~3% faster (bench/bench_optimizer.py), and resumed runs were then not always
    # bit-identical to uninterrupted ones (tests/test_train_resume.py); the default is kept.
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: Config, total_steps: int):
    """``LambdaLR`` with :class:`WarmupCosine` over ``total_steps`` optimiser steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(total_steps, min(cfg.warmup_steps, total_steps)))


__all__ = ["WarmupCosine", "make_optimizer", "make_scheduler"]
