"""Specialisation headroom, measured: the oracle's gain over the shared head on the frozen
Conquer encoder (:mod:`unichest_lib.training.source_oracle`), next to what Divide actually wins over
its compute-matched control, per source, over seeds, with paired patient-bootstrap intervals.

:func:`headroom_scored` caches each seed's test predictions on disk
(``<cache_dir>/evidence/headroom/*.npz``, plain arrays, no pickle), keyed by the Conquer
checkpoint's sha256 and every field upstream of Conquer plus ``divide_epochs`` (what the heads
read). :func:`headroom_measure` is (oracle − shared) macro AUC on the same patient resamples as
every other measure of that split, pooled over seeds as the claims are; :func:`headroom_table`
puts it next to the realised gain (UniChest − Conquer continued, the claim
``unichest_vs_continued``) and the captured share (realised / headroom).

Introduced in ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluation.stats import fmt_interval
from ..fileio import atomic_write, digest
from ..training import checkpoints, keys
from ..training.source_oracle import headroom_predictions
from . import replay
from .measures import (MIN_POS, N_BOOT, Measure, class_auc_replicates, kept_columns,
                       macro_measure, patient_weights)
from .predictions import _WORLD_FIELDS, Scored
from .variants import SEEDS, stored, variant_checkpoint, variant_config

#: Bump when the heads' training changes (old cached predictions are then recomputed).
VERSION = "headroom/2"


def _file(cfg: Config, sha: str) -> pathlib.Path:
    d = cfg.to_dict()
    key = digest({"what": VERSION, "sha": sha, "world": {f: d[f] for f in _WORLD_FIELDS},
                  "fields": keys.keyed(cfg, keys.conquer_fields()),
                  "divide_epochs": cfg.divide_epochs})
    return pathlib.Path(cfg.cache_dir) / "evidence" / "headroom" / f"{key[:24]}.npz"


def headroom_scored(cfg: Config, seed: int, *, progress: bool = True
                    ) -> dict[str, tuple[Scored, Scored]]:
    """{source: (shared, oracle)} test-split predictions of ``cfg.sources`` for one seed, from
    the store's Conquer checkpoint of that seed (trained first when missing); cached on disk."""
    from ..data import make_dataset

    c = variant_config(cfg, "Conquer only", seed)
    path = variant_checkpoint(cfg, "Conquer only", seed, progress=progress)
    file = _file(c, checkpoints.read_meta(path)["sha256"])
    sets = {s: make_dataset(c, [s], "test") for s in c.sources}
    probs = None
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as z:
                probs = {s: (z[f"shared__{s}"], z[f"oracle__{s}"]) for s in sets}
        except (OSError, ValueError, KeyError):  # a damaged cache file: recompute it
            probs = None
        if probs is not None and any(a.shape != (len(ds), len(ds.classes))
                                     for s, ds in sets.items() for a in probs[s]):
            probs = None
    if probs is None:
        pred = headroom_predictions(c, path)
        probs = {s: (pred[s].shared, pred[s].oracle) for s in sets}
        arrays = {f"{k}__{s}": a for s, pair in probs.items()
                  for k, a in zip(("shared", "oracle"), pair)}
        atomic_write(file, lambda f: np.savez(f, **arrays))
    out = {}
    for s, ds in sets.items():
        t = ds.table
        common = dict(labels=np.nan_to_num(t.labels, nan=0.0), mask=t.mask,
                      patients=np.asarray(t.patients), classes=tuple(ds.classes),
                      seen=(True,) * len(ds.classes))
        out[s] = tuple(Scored(probs=p, **common) for p in probs[s])
    return out


def _macro(auc: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without positives
        return np.nanmean(auc, axis=1)


def headroom_measure(cfg: Config, sources: str | Sequence[str], seeds=None, *, n_boot=None,
                     progress: bool = True) -> Measure:
    """(oracle − shared) macro AUC over the kept classes of each source's test split, averaged
    over ``sources``, per seed, on the patient resamples every measure of that split shares
    (so it is paired with :func:`~.measures.macro_measure`). ``info`` holds the shared and
    oracle macro AUCs per seed (``shared``, ``oracle``)."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    points, reps = np.zeros(len(seeds)), np.zeros((len(seeds), n_boot))
    levels = {"shared": np.zeros(len(seeds)), "oracle": np.zeros(len(seeds))}
    for i, seed in enumerate(seeds):
        scored = headroom_scored(cfg, seed, progress=progress)
        for src in sources:
            shared, oracle = scored[src]
            cols, _ = kept_columns(shared, min_pos=MIN_POS[cfg.profile])
            if not cols:  # nothing measurable: NaN
                points[i] = reps[i] = np.nan
                continue
            w = patient_weights(shared.patients, n_boot, f"{src}/test/{cfg.heterogeneity}")
            ms, mo = (_macro(class_auc_replicates(s, w, cols)) for s in (shared, oracle))
            points[i] += (mo[0] - ms[0]) / len(sources)
            reps[i] += (mo[1:] - ms[1:]) / len(sources)
            levels["shared"][i] += ms[0] / len(sources)
            levels["oracle"][i] += mo[0] / len(sources)
    return Measure(points, reps, dict(what="oracle (told the source) - shared head", sources=sources,
                                      split="test", seeds=list(seeds), n_boot=n_boot, **levels))


def headroom_by_class(cfg: Config, classes: Sequence[str] | None = None, seeds=None, *,
                      n_boot=None, progress: bool = True) -> pd.DataFrame:
    """(oracle − shared) AUC per source and class (``classes``: all kept ones), pooled over
    seeds with 95 % intervals, on the same patient resamples as :func:`headroom_measure`.
    Where a world dial acts on a few classes only (the label-meaning dial's broad definitions),
    this shows it before the macro mean dilutes it. Columns: source, class, mean, lo, hi,
    shared_auc, oracle_auc, n_seeds."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    per = {}  # (source, class) -> lists over seeds of (point, reps, shared, oracle)
    for seed in seeds:
        for src, (shared, oracle) in headroom_scored(cfg, seed, progress=progress).items():
            cols, _ = kept_columns(shared, min_pos=MIN_POS[cfg.profile])
            cols = [j for j in cols if classes is None or shared.classes[j] in classes]
            if not cols:
                continue
            w = patient_weights(shared.patients, n_boot, f"{src}/test/{cfg.heterogeneity}")
            a_s, a_o = (class_auc_replicates(x, w, cols) for x in (shared, oracle))
            for k, j in enumerate(cols):
                per.setdefault((src, shared.classes[j]), []).append(
                    (a_o[0, k] - a_s[0, k], a_o[1:, k] - a_s[1:, k], a_s[0, k], a_o[0, k]))
    rows = []
    for (src, cls), vals in per.items():
        if len(vals) != len(seeds):  # kept in some seeds only: no pooled interval
            continue
        m = Measure(np.array([v[0] for v in vals]), np.stack([v[1] for v in vals]), {})
        sm = m.summary()
        rows.append(dict(source=src, **{"class": cls}, mean=sm["mean"], lo=sm["lo"],
                         hi=sm["hi"], shared_auc=float(np.mean([v[2] for v in vals])),
                         oracle_auc=float(np.mean([v[3] for v in vals])), n_seeds=len(seeds)))
    return pd.DataFrame(rows, columns=["source", "class", "mean", "lo", "hi", "shared_auc",
                                       "oracle_auc", "n_seeds"])


def _headroom_stored(cfg: Config, seeds=None, **kw) -> bool:
    return stored(cfg, ["Conquer only", "UniChest", "Conquer continued"], seeds)


@replay.recorded_table("headroom", _headroom_stored)
def headroom_table(cfg: Config, seeds=None, *, progress: bool = True) -> pd.DataFrame:
    """One row per source of ``cfg.sources`` and ``"mean"`` (their average): the headroom
    (oracle − shared head, :func:`headroom_measure`) and the realised gain (UniChest −
    Conquer continued, as the claim ``unichest_vs_continued``), each mean/lo/hi over the
    seeds (pooled 95 % intervals), the shared and oracle macro AUCs, and the captured share
    realised / headroom (NaN unless the headroom's interval lies above zero: a ratio to a
    headroom that cannot be told from zero is noise, e.g. 20x a headroom of +0.0006)."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    rows = []
    parts = [(s, [s]) for s in cfg.sources] + [("mean", list(cfg.sources))]
    for label, srcs in parts:
        h = headroom_measure(cfg, srcs, seeds, progress=progress)
        g = (macro_measure(cfg, "UniChest", srcs, seeds=seeds, progress=progress)
             - macro_measure(cfg, "Conquer continued", srcs, seeds=seeds, progress=progress))
        hs, gs = h.summary(), g.summary()
        rows.append(dict(source=label, headroom=hs["mean"], headroom_lo=hs["lo"],
                         headroom_hi=hs["hi"], realised=gs["mean"], realised_lo=gs["lo"],
                         realised_hi=gs["hi"],
                         captured=gs["mean"] / hs["mean"] if hs["lo"] > 0 else np.nan,
                         shared_auc=float(np.mean(h.info["shared"])),
                         oracle_auc=float(np.mean(h.info["oracle"])), n_seeds=len(seeds),
                         per_seed_headroom=", ".join(f"{v:.3f}" for v in h.points)))
    return pd.DataFrame(rows)


__all__ = ["VERSION", "headroom_by_class", "headroom_measure", "headroom_scored",
           "headroom_table"]
