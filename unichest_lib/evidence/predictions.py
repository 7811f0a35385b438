"""Scoring a variant: its probabilities on one split of one source (:class:`Scored`), from
the record or from its stored model (:mod:`~.replay` decides, per study). Live predictions
are cached on disk (``<cache_dir>/evidence/predictions``), keyed by the checkpoint's checksum,
the world and the query mode (``by=None``: the queries the model was trained with,
``cfg.query_text``; for the paper's names that is ``"name"``); the models and splits scored
are kept in memory for the next calls. The statistics over seeds are in :mod:`.measures`.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ..config import Config
from ..data import make_dataset
from ..data.world import WORLD_FIELDS
from ..evaluation import classification
from ..fileio import atomic_write, digest
from ..training import checkpoints, store
from ..training import features as frozen_features
from .. import hardware
from . import replay
from .variants import VARIANTS, variant_checkpoint, variant_config

_WORLD_FIELDS = ("data",) + WORLD_FIELDS


@dataclasses.dataclass
class Scored:
    """One model's probabilities on one split of one source, with what the statistics need."""

    probs: np.ndarray  # (n, c)
    labels: np.ndarray  # (n, c) 0/1
    mask: np.ndarray  # (n, c) observed
    patients: np.ndarray  # (n,)
    classes: tuple[str, ...]
    seen: tuple[bool, ...]  # class among the model's training classes


_MODELS: dict[str, object] = {}
_DATASETS: dict[str, object] = {}


def _kept(cache: dict, key: str, size: int, make):
    """``cache[key]``, made by ``make()`` when absent; the oldest leaves past ``size`` entries."""
    if key not in cache:
        if len(cache) >= size:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


def _model(path: pathlib.Path, cfg: Config, stage: str, progress: bool):
    """The stored model at ``path`` (of ``cfg``'s ``stage``), kept for the next few calls."""
    return _kept(_MODELS, str(path), 4, lambda: store.load_model(cfg, stage, progress=progress))


def scored(cfg: Config, name: str, seed: int, source: str, *, split: str = "test",
           by: str | None = None, progress: bool = True, **extra) -> Scored:
    """Probabilities of variant ``name`` (seed) on ``source``'s ``split``: from the record or
    live (:mod:`~.replay` decides, per study), live ones cached on disk by checkpoint
    checksum, data and query mode (``.npz`` of plain arrays, no pickle)."""
    c = variant_config(cfg, name, seed, **extra)
    by = c.query_text if by is None else by  # the trained queries: same cache key as by name
    m = replay.mode()
    stored = store.is_valid(c, VARIANTS[name].stage)
    recorded = replay.has_probs(c, name, source, split, by) if m in ("auto", "recorded") else False
    if m == replay.STORED and not stored:
        raise replay.RecordMissing(f"{name} (seed {seed}) is not stored")
    if m == "recorded" and not recorded:
        raise replay.RecordMissing(f"{name} (seed {seed}) on {source} {split} is not recorded")
    ds = _dataset(cfg, source, split)
    t = ds.table
    if m == "recorded" or (recorded and not stored):
        probs, rec = replay.read_probs(c, name, source, split, by, ds.classes, len(ds))
        replay.note_used("recorded", rec)
        classes = rec.provenance.get("model_classes", ds.classes)
    else:
        probs, meta = _live_probs(cfg, c, name, seed, source, split, by, ds, progress, extra)
        replay.note_used("live")
        classes = meta["classes"]
        if replay.recording():
            replay.write_probs(c, name, source, split, by, probs, ds.classes, dict(
                hardware.provenance(c.amp, c.device), model_classes=list(meta["classes"]),
                store_key=store.key(c, VARIANTS[name].stage), checkpoint_sha256=meta["sha256"],
                train_seconds=_train_seconds(c, VARIANTS[name].stage)))
    seen = tuple(k in classes for k in ds.classes)
    return Scored(probs=probs, labels=np.nan_to_num(t.labels, nan=0.0), mask=t.mask,
                  patients=np.asarray(t.patients), classes=tuple(ds.classes), seen=seen)


def _dataset(cfg: Config, source: str, split: str):
    """``make_dataset(cfg, [source], split)``, kept for the next calls with the same
    configuration: the tables score every variant and seed on the same few splits, and
    building a split's labels and reports again each time cost a chapter tens of seconds."""
    key = digest({"cfg": cfg.to_dict(), "source": source, "split": split})
    return _kept(_DATASETS, key, 32, lambda: make_dataset(cfg, [source], split))


def _train_seconds(c: Config, stage: str) -> float | None:
    """Wall time of the run's training steps (its history), None when it has no history."""
    try:
        h = store.history(c, stage, progress=False)
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return float(h["train_seconds"].sum()) if "train_seconds" in h else None


def _live_probs(cfg, c, name, seed, source, split, by, ds, progress, extra):
    path = variant_checkpoint(cfg, name, seed, progress=progress, **extra)
    meta = checkpoints.read_meta(path)
    d = cfg.to_dict()
    key = digest({"sha": meta["sha256"], "world": {f: d[f] for f in _WORLD_FIELDS},
                  "source": source, "split": split, "by": by})
    file = pathlib.Path(cfg.cache_dir) / "evidence" / "predictions" / f"{key[:24]}.npz"
    probs = None
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as z:
                probs = z["probs"]
        except (OSError, ValueError, KeyError):  # a damaged cache file: recompute it
            probs = None
        if probs is not None and probs.shape != (len(ds), len(ds.classes)):
            probs = None
    if probs is None:
        model = _model(path, c, VARIANTS[name].stage, progress)
        feats = None
        if VARIANTS[name].stage == "divide":  # frozen encoder: encode each split once per seed
            start = meta["extra"].get("run_key", "").rsplit(":", 1)[-1]  # its Conquer's sha256
            if start:
                feats = frozen_features.frozen_patches(model, ds, c, start)
        probs = classification.predict(model, ds, c, by=by, features=feats).probs
        atomic_write(file, lambda f: np.savez(f, probs=probs))
    return probs, meta


__all__ = ["Scored", "scored"]
