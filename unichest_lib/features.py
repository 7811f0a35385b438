"""Frozen image features for the Divide stage (paper Section III-C3: both encoders frozen).

In Divide the image encoder Φ_image never changes, so the patches I of Eq. 1 of an image
seen *without* augmentation are the same in every epoch. ``cfg.divide_on_features = True``
uses that: :func:`encode` runs the frozen encoder once over the training split, in the
dataset's order (so a resumed run, or another process, sees exactly the same numbers), and
the :class:`~unichest_lib.train.Trainer` then feeds the stored patches of each batch to the
query networks (``UniChest.forward(patches=..., grid=...)``) instead of re-encoding images.

What it changes: Divide then sees its training images **without** train-time augmentation
(no crop/flip/jitter, no Fourier amplitude mixup; Conquer keeps them), which is why it is an
option (default off, as the paper augments throughout) and part of the Divide store key.
What it buys: a Divide step no longer runs the image encoder at all; at the ``paper`` shapes
that is most of its cost (``bench/bench_mfu.py`` prints both steps). Validation still encodes
its images. Memory: ``n_train x h*w x d`` values (float32, or bfloat16 under autocast),
held in host memory: about 10 MB at ``tutorial``; at ``paper`` 0.4 MB per image in bfloat16
(0.8 MB in float32), so the paper's 686k images would need a disk-backed store, not this.

Introduced in ``notebooks/05_ablations.ipynb`` (the λ×K grid trains many Divide runs from
one Conquer checkpoint and shares one :class:`FrozenFeatures` between them).
"""

from __future__ import annotations

import dataclasses

import torch

from . import hardware
from .config import Config


@dataclasses.dataclass(frozen=True)
class FrozenFeatures:
    """Patches I (Eq. 1) of every row of one dataset: ``patches[i]`` is row ``i``'s (h*w, d)."""

    patches: torch.Tensor  # (n, h*w, d)
    grid: tuple[int, int]  # (h, w) of the patch map
    n_rows: int  # len(dataset) when encoded: a guard against using another dataset's rows

    def batch(self, index: torch.Tensor, device) -> torch.Tensor:
        """The patches of the rows ``index`` (B,), on ``device``: (B, h*w, d)."""
        if index.numel() and int(index.max()) >= self.n_rows:
            raise IndexError(f"row {int(index.max())} is outside the {self.n_rows} encoded rows; "
                             "the features belong to another dataset")
        return self.patches.index_select(0, index.cpu()).to(device, non_blocking=True)


def encoded_batches(model, dataset, cfg: Config):
    """Yield ``(patches (B, h*w, d) on the CPU, (h, w))`` of ``model``'s image encoder over
    ``dataset`` in order, ``cfg.eval_batch_size`` images at a time: eval mode (restored after),
    no augmentation, inference mode, ``cfg.amp`` autocast. The one loop behind
    :func:`encode` and the linear probe's features (``finetune.image_features``)."""
    from .data import make_loader

    enc = model.image_encoder
    was_training = enc.training
    enc.eval()
    device = next(model.parameters()).device  # the encoder may hold no parameters itself
    try:
        for batch in make_loader(dataset, cfg, train=False):
            with torch.inference_mode(), hardware.autocast(cfg.amp, device):
                p, grid = enc(batch["image"].to(device, non_blocking=True))
            yield p.cpu(), tuple(grid)
    finally:
        enc.train(was_training)


def encode(model, dataset, cfg: Config) -> FrozenFeatures:
    """Every row's patches of ``dataset`` (see :func:`encoded_batches`) as FrozenFeatures."""
    chunks, grids = zip(*encoded_batches(model, dataset, cfg))
    # inference tensors cannot enter autograd later: a plain (cloned) tensor is stored
    return FrozenFeatures(patches=torch.cat(chunks).clone(), grid=grids[0], n_rows=len(dataset))


_SHARED: dict[str, FrozenFeatures] = {}
#: Stored features kept per process (each a few MB at ``tutorial``).
MAX_SHARED = 4


def shared(key: str, make) -> FrozenFeatures:
    """The features stored under ``key`` in this process, or ``make()`` stored there: the
    Divide runs that the store trains one after another from one Conquer checkpoint (the
    controls and the λ×K grid) encode its training split once. ``key`` must name everything
    that changes the patches (checkpoint checksum, dataset, image size, precision)."""
    if key not in _SHARED:
        while len(_SHARED) >= MAX_SHARED:
            _SHARED.pop(next(iter(_SHARED)))
        _SHARED[key] = make()
    return _SHARED[key]


__all__ = ["FrozenFeatures", "MAX_SHARED", "encode", "encoded_batches", "shared"]
