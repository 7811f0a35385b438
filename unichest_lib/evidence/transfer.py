"""Transfer with its baselines (paper Table II, issue #15): linear probe and fine-tuning on
1 %, 10 % and 100 % of a downstream training split, for UniChest's image encoder, the Conquer
encoder and the same architecture left at its random initialisation.

For every training seed of the profile each encoder is transferred with each protocol and
portion (:mod:`unichest_lib.evaluation.finetune`); a portion below 100 % is a stratified label
subset drawn with that seed, the same subset for every encoder. Test predictions are macro
AUCs over the kept classes, resampled with **one set of patient weights** per test split, so
every row is paired with every other. A row's 95 % interval (:meth:`.measures.Measure.summary`)
therefore covers the training seed, the label subset (below 100 %) and the test patients;
``pre-trained − random init`` is a paired difference per encoder, protocol and portion.

The random encoder is the draw :class:`unichest_lib.model.UniChest` makes at that seed (no
ImageNet weights). Divide trains on the frozen encoder, so UniChest's image encoder *is* its
Conquer encoder: both share one cache entry and give identical rows. Test predictions are
cached (``<cache_dir>/evidence/transfer/*.npz``, plain arrays, no pickle), keyed by the
encoder's checkpoint sha256 (or the random seed), protocol, portion, epochs and data fields.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import Config, ConfigError
from ..data import make_dataset
from ..evaluation import finetune
from ..fileio import atomic_write, digest
from ..model.encoders import ImageEncoder
from ..model.inference import pooled_features
from ..training import checkpoints, keys
from . import replay
from .measures import (_WORLD_FIELDS, MIN_POS, N_BOOT, Measure, Scored, class_auc_replicates,
                       kept_columns, patient_weights)
from .variants import SEEDS, VARIANTS, stored, variant_checkpoint, variant_config, variant_model

RANDOM = "random init"
#: The encoders compared: two pre-trained variants and the random control.
ENCODERS = ("UniChest", "Conquer only", RANDOM)
PROTOCOLS = ("linear probe", "fine-tune")
#: Bump when the transfer protocols change (old cached predictions are then recomputed).
VERSION = "transfer/1"
COLUMNS = ("encoder", "protocol", "portion", "setting", "kind", "n_train", "mean", "lo", "hi",
           "n_seeds", "per_seed", "verdict")


class _EncoderOnly(nn.Module):
    """Holds an image encoder where the transfer code reads it (``.image_encoder``)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.image_encoder = encoder


def random_encoder(cfg: Config, seed: int) -> nn.Module:
    """A model holding only ``cfg``'s image encoder at its random initialisation for
    ``seed`` (UniChest's own draw at that seed, without ImageNet weights), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = ImageEncoder(cfg.backbone, cfg.embed_dim, pretrained=False,
                           channels_last=cfg.channels_last, output_stride=cfg.output_stride)
    return _EncoderOnly(enc).eval()


def _encoder_key(cfg: Config, encoder: str, seed: int, progress: bool):
    """(cache identity of the image encoder, a loader of the model holding it)."""
    if encoder == RANDOM:
        arch = keys.keyed(cfg, ("backbone", "embed_dim", "output_stride"))
        return {"random": seed, **arch}, lambda: random_encoder(cfg, seed)
    meta = checkpoints.read_meta(variant_checkpoint(cfg, encoder, seed, progress=progress))
    sha = meta["sha256"]
    if VARIANTS[encoder].stage == "divide":  # Divide never trains the encoder: its Conquer's
        sha = meta["extra"].get("run_key", "").rsplit(":", 1)[-1] or sha
    return {"sha": sha}, lambda: variant_model(cfg, encoder, seed, progress=progress)


def _file(c: Config, ident: dict, protocol: str, portion: float, epochs: int,
          source: str) -> pathlib.Path:
    d = c.to_dict()
    train = ({"epochs": epochs, **{f: d[f] for f in ("lr", "weight_decay", "batch_size")}}
             if protocol == "fine-tune" else {})
    key = digest({"what": VERSION, "encoder": ident, "protocol": protocol, "portion": portion,
                  "seed": c.seed, "source": source, "amp": c.amp, "train": train,
                  "world": {f: d[f] for f in _WORLD_FIELDS}, **keys.world_version(c)})
    return pathlib.Path(c.cache_dir) / "evidence" / "transfer" / f"{key[:24]}.npz"


def _read(file: pathlib.Path, shape) -> np.ndarray | None:
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            probs = z["probs"]
    except (OSError, ValueError, KeyError):  # a damaged cache file: recompute it
        return None
    return probs if probs.shape == shape else None


def transfer_predictions(cfg: Config, encoder: str, seed: int, *, source: str = "siim",
                         protocols: Sequence[str] = PROTOCOLS,
                         portions: Sequence[float] = finetune.PORTIONS, epochs: int = 2,
                         progress: bool = True) -> dict[tuple[str, float], np.ndarray]:
    """{(protocol, portion): test probabilities (n, c)} of ``encoder`` (a variant name or
    ``"random init"``) at ``seed`` on ``source``; each read from the cache or computed and
    cached. The label subset of a portion is drawn with ``seed``."""
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ConfigError(f"unknown protocol(s) {bad}; choose from {PROTOCOLS}")
    if epochs < 1:
        raise ConfigError(f"epochs = {epochs!r} must be >= 1")
    if not all(0.0 < float(p) <= 1.0 for p in portions):
        raise ConfigError(f"portions = {list(portions)!r} must lie in (0, 1]; e.g. 0.01 for 1 %")
    if encoder != RANDOM and encoder not in VARIANTS:
        raise ConfigError(f"unknown encoder {encoder!r}; choose {RANDOM!r} or one of "
                          f"{list(VARIANTS)}")
    c = cfg.replace(seed=seed) if encoder == RANDOM else variant_config(cfg, encoder, seed)
    ident, get_model = _encoder_key(cfg, encoder, seed, progress)
    tr, te = make_dataset(c, [source], "train"), make_dataset(c, [source], "test")
    y_tr, m_tr = np.nan_to_num(tr.table.labels, nan=0.0), tr.table.mask
    shape = (len(te), len(te.classes))
    model, feats, out = None, None, {}
    for protocol in protocols:
        for p in portions:
            file = _file(c, ident, protocol, float(p), epochs, source)
            probs = _read(file, shape)
            if probs is None:
                model = get_model() if model is None else model
                idx = finetune.stratified_subset(tr.table.labels, p, seed)
                if protocol == "linear probe":
                    if feats is None:  # encode both splits once for every portion
                        feats = pooled_features(model, tr, c), pooled_features(model, te, c)
                    probs = finetune.logistic_scores(feats[0][idx], y_tr[idx], m_tr[idx],
                                                     feats[1], seed)
                else:
                    probs = finetune.fine_tune_scores(model, c, tr, te, idx, epochs=epochs)
                atomic_write(file, lambda f, a=probs: np.savez(f, probs=a))
            out[protocol, float(p)] = probs
    return out


def _macro(auc: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without positives
        return np.nanmean(auc, axis=1)


def transfer_measures(cfg: Config, *, source: str = "siim",
                      encoders: Sequence[str] = ENCODERS, protocols: Sequence[str] = PROTOCOLS,
                      portions: Sequence[float] = finetune.PORTIONS, epochs: int = 2, seeds=None,
                      n_boot=None, progress: bool = True) -> tuple[dict, dict]:
    """{(encoder, protocol, portion): :class:`.measures.Measure` of the test macro AUC} over
    the seeds, on one set of patient resamples, and what they were computed on (``n_train``
    per portion, the ``classes`` table with the kept ones, seeds, n_boot)."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    tr, te = make_dataset(cfg, [source], "train"), make_dataset(cfg, [source], "test")
    t = te.table
    common = dict(labels=np.nan_to_num(t.labels, nan=0.0), mask=t.mask,
                  patients=np.asarray(t.patients), classes=tuple(te.classes),
                  seen=(True,) * len(te.classes))
    w = patient_weights(common["patients"], n_boot, f"transfer/{source}")
    cols, table = kept_columns(Scored(probs=np.zeros(t.labels.shape), **common),
                               min_pos=MIN_POS[cfg.profile])
    grid = [(e, pr, float(p)) for e in encoders for pr in protocols for p in portions]
    points = {g: np.full(len(seeds), np.nan) for g in grid}
    reps = {g: np.full((len(seeds), n_boot), np.nan) for g in grid}
    for i, seed in enumerate(seeds):
        for enc in encoders:
            preds = transfer_predictions(cfg, enc, seed, source=source, protocols=protocols,
                                         portions=portions, epochs=epochs, progress=progress)
            for (protocol, p), probs in preds.items():
                if cols:  # else nothing measurable: NaN
                    macro = _macro(class_auc_replicates(Scored(probs=probs, **common), w, cols))
                    points[enc, protocol, p][i], reps[enc, protocol, p][i] = macro[0], macro[1:]
    out = {g: Measure(points[g], reps[g], dict(what=f"{g[0]}: {g[1]}, {g[2] * 100:g} %",
                                               sources=[source], seeds=list(seeds)))
           for g in grid}
    n_train = {float(p): len(finetune.stratified_subset(tr.table.labels, p, seeds[0]))
               for p in portions}
    return out, dict(n_train=n_train, classes=table.assign(source=source), seeds=list(seeds),
                     n_boot=n_boot, source=source)


def _transfer_stored(cfg: Config, **kw) -> bool:
    return stored(cfg, [e for e in kw.get("encoders", ENCODERS) if e != RANDOM],
                  kw.get("seeds"))


@replay.recorded_table("transfer", _transfer_stored)
def transfer_table(cfg: Config, *, source: str = "siim", encoders: Sequence[str] = ENCODERS,
                   protocols: Sequence[str] = PROTOCOLS,
                   portions: Sequence[float] = finetune.PORTIONS, epochs: int = 2, seeds=None,
                   n_boot=None, progress: bool = True) -> pd.DataFrame:
    """Test macro AUC of every encoder, protocol and portion (``kind == "score"``) and each
    pre-trained encoder − random init (``kind == "difference"``, paired, with the verdict of
    "pre-training helps"): mean over seeds, 95 % interval over seeds, label subsets and test
    patients (clipped to [0, 1], or [-1, 1] for a difference), ``n_train`` and ``n_seeds``."""
    ms, info = transfer_measures(cfg, source=source, encoders=encoders, protocols=protocols,
                                 portions=portions, epochs=epochs, seeds=seeds, n_boot=n_boot,
                                 progress=progress)
    rows = []
    for protocol in protocols:
        for p in map(float, portions):
            for enc in encoders:
                rows.append(_row(ms[enc, protocol, p], enc, protocol, p, "score", info))
            if RANDOM in encoders:
                for enc in (e for e in encoders if e != RANDOM):
                    rows.append(_row(ms[enc, protocol, p] - ms[RANDOM, protocol, p],
                                     f"{enc} − {RANDOM}", protocol, p, "difference", info))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(m: Measure, encoder: str, protocol: str, portion: float, kind: str, info: dict):
    s = m.summary()
    low = 0.0 if kind == "score" else -1.0  # a normal interval may spill over the range
    return dict(encoder=encoder, protocol=protocol, portion=portion,
                setting=f"{protocol}, {portion * 100:g} %", kind=kind,
                n_train=info["n_train"][portion], mean=s["mean"], lo=max(s["lo"], low), hi=min(s["hi"], 1.0),
                n_seeds=s["n_seeds"], per_seed=", ".join(f"{v:.3f}" for v in m.points),
                verdict=s["verdict"] if kind == "difference" else "")


__all__ = ["COLUMNS", "ENCODERS", "PROTOCOLS", "RANDOM", "VERSION", "random_encoder",
           "transfer_measures", "transfer_predictions", "transfer_table"]
