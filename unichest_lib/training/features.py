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
λ×K grid), the chapters that score them, and later processes share one encoding per split
and Conquer checkpoint (:func:`shared`, kept in memory and in ``<cache_dir>/features/``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

import numpy as np
import torch

from ..config import Config
from ..fileio import atomic_write
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


#: Bytes of stored features kept in memory per process (the least recently used go first).
MAX_MEMORY_BYTES = 1 << 30
#: Encodings larger than this are kept in memory only, not written to the disk cache (the
#: ``paper`` test splits of real data would take gigabytes).
MAX_DISK_BYTES = 256 << 20
_SHARED: dict[str, FrozenFeatures] = {}


def features_key(checkpoint_sha256: str, dataset, cfg: Config) -> str:
    """A key that names everything the stored patches of ``dataset`` depend on: the frozen
    encoder (its Conquer checkpoint's sha256), the data (the dataset's name, rows, patients,
    sources and labels, and every configuration field upstream of Conquer, which include
    the world's and the real data's settings) and how they were computed (image size,
    precision, memory format)."""
    return (f"{checkpoint_sha256}:{dataset.name}:{len(dataset)}:{cfg.image_size}:{cfg.amp}:"
            f"{cfg.channels_last}:{dataset_digest(dataset, cfg)}")


def dataset_digest(dataset, cfg: Config) -> str:
    """A short digest of ``dataset``'s rows (patients, sources, labels) and of every
    configuration field upstream of Conquer but the seed (the data's settings among them)."""
    from .keys import upstream

    t = dataset.table
    h = hashlib.sha256()
    for a in (np.asarray(t.patients).astype(str), np.asarray(t.source_ids), np.asarray(t.labels)):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(upstream(cfg), sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _nbytes(feats: FrozenFeatures) -> int:
    return feats.patches.numel() * feats.patches.element_size()


def _disk_path(cache_dir, key: str) -> pathlib.Path:
    return pathlib.Path(cache_dir) / "features" / (
        hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")


def _load(path: pathlib.Path, key: str) -> FrozenFeatures | None:
    """The features stored at ``path`` under ``key``, or None (missing, damaged, another key)."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            patches = f.get_tensor("patches")
        grid = tuple(int(v) for v in meta["grid"].split(","))
        n_rows = int(meta["n_rows"])
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        return None
    if patches.dim() != 3 or patches.shape[0] != n_rows or len(grid) != 2:
        return None
    return FrozenFeatures(patches=patches, grid=grid, n_rows=n_rows)


def _save(path: pathlib.Path, key: str, feats: FrozenFeatures) -> None:
    from safetensors.torch import save

    meta = {"key": key, "grid": ",".join(map(str, feats.grid)), "n_rows": str(feats.n_rows)}
    atomic_write(path, save({"patches": feats.patches.contiguous()}, metadata=meta))


def shared(key: str, make, *, cache_dir=None) -> FrozenFeatures:
    """The features stored under ``key``: from this process's memory, else (with
    ``cache_dir``) from ``<cache_dir>/features/``, else ``make()`` — then kept in both. The
    frozen encoder gives the same patches in every epoch, every Divide run from the same
    Conquer checkpoint (the controls, the λ×K grid) and every chapter, so a split is encoded
    once per checkpoint, not once per run. ``key`` must name everything that changes the
    patches: build it with :func:`features_key`. Files are safetensors (no pickle), written
    atomically; a damaged or foreign file is recomputed."""
    feats = _SHARED.pop(key, None)  # re-inserted below: the dict is kept in use order
    path = None if cache_dir is None else _disk_path(cache_dir, key)
    if feats is None and path is not None:
        feats = _load(path, key)
    if feats is None:
        feats = make()
        if path is not None and _nbytes(feats) <= MAX_DISK_BYTES:
            _save(path, key, feats)
    _SHARED[key] = feats
    while len(_SHARED) > 1 and sum(map(_nbytes, _SHARED.values())) > MAX_MEMORY_BYTES:
        _SHARED.pop(next(iter(_SHARED)))
    return feats


def frozen_patches(model, dataset, cfg: Config, encoder_sha256: str = "") -> FrozenFeatures:
    """The one path to a split's patches under a frozen encoder: with ``encoder_sha256`` (the
    Conquer checkpoint the encoder comes from) they are shared under :func:`features_key`
    (encoded once per checkpoint and split, :func:`shared`); without, encoded now."""
    if not encoder_sha256:
        return encode(model, dataset, cfg)
    return shared(features_key(encoder_sha256, dataset, cfg),
                  lambda: encode(model, dataset, cfg), cache_dir=cfg.cache_dir)


#: Pooled text features shared by the runs of this process, per frozen text backbone.
_TEXT_CACHES: dict[str, dict] = {}


class RunCache:
    """A trainer callback: the work runs share, in one place. ``run_key`` names the run (a
    resumed run must have the same), ``encoder_sha256`` the Conquer checkpoint whose frozen
    encoder a Divide run reads (its patches are then shared by every run from it, and
    ``features`` may pass ones already encoded), and with a frozen pretrained text backbone
    (``cfg.freeze_text``) the pooled text features are shared by the runs of this process
    (in Divide, L_BCL is a reported constant, so their last bits cannot change what is
    trained)."""

    def __init__(self, run_key: str = "", encoder_sha256: str = "",
                 features: FrozenFeatures | None = None):
        self.run_key, self.encoder_sha256, self.features = run_key, encoder_sha256, features

    def on_bind(self, trainer) -> None:
        trainer.run_key, trainer.encoder_sha256 = self.run_key, self.encoder_sha256
        if self.features is not None:
            trainer.features = self.features
        if trainer.stage == "divide" and trainer.cfg.freeze_text:
            trainer.text_cache = _TEXT_CACHES.setdefault(trainer.cfg.text_model, {})

    def on_validation(self, trainer) -> None:
        return None


__all__ = ["FrozenFeatures", "MAX_DISK_BYTES", "MAX_MEMORY_BYTES", "RunCache", "dataset_digest",
           "encode", "features_key", "frozen_patches", "shared"]
