"""Frozen image features for the Divide stage (paper Section III-C3: both encoders frozen).

In Divide the image encoder Φ_image never changes, so the patches I of Eq. 1 of an image
seen *without* augmentation are the same in every epoch. ``cfg.divide_on_features = True``
uses that: :func:`encode` runs the frozen encoder once over the training split, in the
dataset's order (so a resumed run, or another process, sees exactly the same numbers), and
the :class:`~unichest_lib.training.trainer.Trainer` then feeds the stored patches of each
batch to the query networks (``UniChest.forward(patches=..., grid=...)``) instead of
re-encoding images.

What it changes: Divide then sees its training images **without** train-time augmentation
(no crop/flip/jitter, no Fourier amplitude mixup; Conquer keeps them), which is why it is an
option (on at ``smoke`` and ``tutorial``, off at ``paper``, which augments throughout as the
paper does) and part of the Divide store key.
What it buys: a Divide step no longer runs the image encoder at all; at the ``paper`` shapes
that is most of its cost (``bench/bench_mfu.py`` prints both steps). Validation still encodes
its images. Memory: ``n_train x h*w x d`` values (float32, or bfloat16 under autocast),
held in host memory: about 10 MB at ``tutorial``; at ``paper`` 0.4 MB per image in bfloat16
(0.8 MB in float32), so the paper's 686k images would need a disk-backed store, not this.

Introduced in ``notebooks/03_divide.ipynb`` (``divide_on_features``); the Divide runs the
store trains one after another from one Conquer checkpoint (the controls of chapter 05 and its
λ×K grid) share one :class:`FrozenFeatures` (:func:`shared`).
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import Config
from ..model.inference import encoded_batches


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

    def batches(self, batch_size: int):
        """Consecutive rows as ``{"image": patches (B, h*w, d)}`` dicts, in order: a loader
        for :func:`unichest_lib.model.inference.predict_batches` whose forward takes patches."""
        for i in range(0, self.n_rows, batch_size):
            yield {"image": self.patches[i:i + batch_size]}


def encode(model, dataset, cfg: Config) -> FrozenFeatures:
    """Every row's patches of ``dataset`` as FrozenFeatures (the frozen encoder in eval
    mode, no augmentation: :func:`unichest_lib.model.inference.encoded_batches`)."""
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


__all__ = ["FrozenFeatures", "MAX_SHARED", "encode", "shared"]
