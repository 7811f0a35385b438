"""Running a model for inference: the one eval-mode context and the one prediction loop.

Every place that scores images — the trainer's validation aAUC, the evaluation tables, the
frozen features of the Divide stage and of the linear probe, the gate weights, the
fine-tuned classifier — runs through :func:`predict_batches`: the module in eval mode
(its previous train/eval mode restored afterwards, also on error, by :func:`evaluating`),
``torch.inference_mode``, and bfloat16 autocast where the device computes it natively
(:func:`unichest_lib.hardware.autocast`). Class queries are computed by the callers *before*
entering inference mode, because the model may cache them.

Introduced in ``notebooks/02_conquer.ipynb`` (validation) and ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .. import hardware
from ..config import Config


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; its previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter."""
    return next(model.parameters()).device


def predict_batches(module: nn.Module, loader, *, amp: bool, device=None,
                    forward: Callable | None = None) -> Iterator[tuple[dict, object]]:
    """Yield ``(batch, forward(images))`` for every batch of ``loader``, with ``module`` in
    eval mode, under inference mode and :func:`unichest_lib.hardware.autocast`.

    ``forward`` defaults to ``module`` itself (e.g. ``lambda x: model(x, queries=q)`` to pass
    precomputed queries); ``device`` defaults to ``module``'s."""
    device = device_of(module) if device is None else device
    forward = module if forward is None else forward
    with evaluating(module):
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            with torch.inference_mode(), hardware.autocast(amp, device):
                out = forward(images)
            yield batch, out


def query_forward(model, queries: torch.Tensor, grid: tuple[int, int] | None = None) -> Callable:
    """The ``forward`` for :func:`predict_batches` with precomputed class ``queries``: on
    images, or with ``grid`` (h, w) on stored patches of the frozen encoder (a Divide-stage
    model; the loader then yields patches, e.g. ``FrozenFeatures.batches``)."""
    if grid is None:
        return lambda x: model(x, queries=queries)
    return lambda p: model(None, patches=p, grid=grid, queries=queries)


def encoded_batches(model, dataset, cfg: Config) -> Iterator[tuple[torch.Tensor, tuple[int, int]]]:
    """Yield ``(patches (B, h*w, d) on the CPU, (h, w))`` of ``model``'s image encoder over
    ``dataset`` in order, ``cfg.eval_batch_size`` images at a time, without augmentation: the
    loop behind the Divide stage's stored features and the linear probe's Ī."""
    from ..data import make_loader

    loader = make_loader(dataset, cfg, train=False)
    # the device of the whole model: the encoder may hold no parameters itself
    for _, (p, grid) in predict_batches(model.image_encoder, loader, amp=cfg.amp,
                                        device=device_of(model)):
        yield p.cpu(), tuple(grid)


def pooled_features(model, dataset, cfg: Config) -> np.ndarray:
    """Ī (N, d) of every image of ``dataset``: the mean of the frozen image encoder's patches
    (Eq. 1), the input of the linear probe."""
    return torch.cat([p.float().mean(1) for p, _ in encoded_batches(model, dataset, cfg)]).numpy()


def gate_weights(model, dataset, cfg: Config) -> np.ndarray:
    """ω (N, K−1) of Eq. 5 for every image of ``dataset`` (a Divide-stage model, K ≥ 2)."""
    from ..data import make_loader

    if model.stage != "divide" or model.cfg.K < 2:
        raise ValueError(f"gate weights need a Divide-stage model with K >= 2 "
                         f"(got stage {model.stage!r}, K={model.cfg.K})")
    loader = make_loader(dataset, cfg, train=False)
    gates = [out["gate"].float().cpu() for _, out in predict_batches(model, loader, amp=cfg.amp)]
    return torch.cat(gates).numpy()


__all__ = ["device_of", "encoded_batches", "evaluating", "gate_weights", "pooled_features",
           "predict_batches", "query_forward"]
