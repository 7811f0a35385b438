"""Measuring a variant over seeds: per-class AUCs of its test-split predictions bootstrapped
by patient, and the tables the chapters show with their 95 % intervals (the ``mean [lo, hi]``
text of a table is :func:`unichest_lib.book.tables.with_intervals`); :class:`Study` is what
the functions of the optional studies return.

For every (variant, seed) the test split of each source is scored once
(:func:`.predictions.scored`) and the per-class AUCs are bootstrapped with **the same patient
resamples** for every variant and seed (:func:`unichest_lib.evaluation.stats.cluster_weights`),
so differences between two variants are paired. A comparison's interval is :func:`unichest_lib.evaluation.stats.pooled_interval`:
it counts the spread between seeds *and* the test-set sampling. Classes with fewer than
:data:`MIN_POS` positives or negatives in a test split are flagged and left out of the macro
means.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..data import make_dataset
from ..data.label_spaces import source_classes, union_classes
from ..evaluation import metrics, stats
from . import replay
from .predictions import Scored, scored
from .variants import SEEDS

#: Bootstrap replicates per profile.
N_BOOT = {"smoke": 200, "tutorial": 1000, "paper": 2000}
#: A class needs this many positives *and* negatives in a test split to enter a macro mean
#: (per profile; the smoke world's test splits are tiny).
MIN_POS = {"smoke": 2, "tutorial": 5, "paper": 10}
ALPHA = 0.05


# ---- bootstrap of class AUCs -------------------------------------------------------------------
def class_auc_replicates(s: Scored, weights: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """(B + 1, len(columns)) AUCs: row 0 on the full split, rows 1.. on the resamples."""
    w = np.vstack([np.ones((1, weights.shape[1])), weights])
    out = np.full((len(w), len(columns)), np.nan)
    for k, j in enumerate(columns):
        m = s.mask[:, j]
        out[:, k] = stats.weighted_auc(s.labels[m, j], s.probs[m, j], w[:, m])
    return out


def kept_columns(s: Scored, *, seen: bool | None = None, min_pos: int = 5
                 ) -> tuple[list[int], pd.DataFrame]:
    """Columns with at least ``min_pos`` positives and negatives (optionally only seen or
    unseen classes), and a table of every class's n, n_pos and whether it was kept."""
    n = s.mask.sum(0)
    n_pos = (s.labels * s.mask).sum(0)
    rows, keep = [], []
    for j, c in enumerate(s.classes):
        if seen is not None and s.seen[j] != seen:
            continue
        ok = n_pos[j] >= min_pos and n[j] - n_pos[j] >= min_pos
        rows.append(dict(**{"class": c}, n=int(n[j]), n_pos=int(n_pos[j]), kept=bool(ok)))
        if ok:
            keep.append(j)
    return keep, pd.DataFrame(rows)


def patient_weights(patients: np.ndarray, n_boot: int, tag: str) -> np.ndarray:
    """(n_boot, n) bootstrap weights resampling *patients* (:func:`stats.cluster_weights`),
    seeded by ``tag``: every variant and seed measured on one split shares them."""
    seed = int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16)
    return stats.cluster_weights(patients, n_boot, np.random.default_rng(seed))


@dataclasses.dataclass
class Measure:
    """One quantity over seeds: ``points`` (n_seeds,) and ``reps`` (n_seeds, B) replicates
    on shared resamples; ``info`` says what it was computed on."""

    points: np.ndarray
    reps: np.ndarray
    info: dict

    def __sub__(self, other: "Measure") -> "Measure":
        return Measure(self.points - other.points, self.reps - other.reps,
                       {**self.info, "minus": other.info.get("what", "")})

    def summary(self, *, kind: str = "greater", margin: float = 0.0) -> dict:
        out = stats.summarise(self.points, self.reps, alpha=ALPHA, kind=kind, margin=margin)
        out["per_seed"] = [float(v) for v in self.points]
        return out


def macro_measure(cfg: Config, name: str, sources: Sequence[str], *, split: str = "test",
                  by: str | None = None, seen: bool | None = None, seeds=None, n_boot=None,
                  progress: bool = True, **extra) -> Measure:
    """Mean over ``sources`` of each source's macro AUC (kept classes; ``seen`` selects
    seen/unseen classes only), for every seed, with bootstrap replicates."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    points = np.zeros(len(seeds))
    reps = np.zeros((len(seeds), n_boot))
    tables = []
    for src in sources:
        for i, seed in enumerate(seeds):
            s = scored(cfg, name, seed, src, split=split, by=by, progress=progress, **extra)
            cols, table = kept_columns(s, seen=seen, min_pos=MIN_POS[cfg.profile])
            if i == 0:
                w = patient_weights(s.patients, n_boot, f"{src}/{split}/{cfg.heterogeneity}")
                tables.append(table.assign(source=src))
            if not cols:  # nothing measurable: NaN, and the verdict says inconclusive
                points[i], reps[i] = np.nan, np.nan
                continue
            auc = class_auc_replicates(s, w, cols)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample without positives
                macro = np.nanmean(auc, axis=1)
            points[i] += macro[0] / len(sources)
            reps[i] += macro[1:] / len(sources)
    info = dict(what=name, sources=list(sources), split=split, seeds=list(seeds),
                n_boot=n_boot, classes=pd.concat(tables, ignore_index=True))
    return Measure(points, reps, info)


@replay.with_evidence
def variant_table(cfg: Config, names: Sequence[str], sources: Sequence[str] | None = None, *,
                  split: str = "test", by: str | None = None, seen: bool | None = None,
                  mean_row: bool = True, progress: bool = True, **extra) -> pd.DataFrame:
    """aAUC of each variant on each source (and their mean), over the profile's seeds:
    columns variant, source, mean, lo, hi (pooled 95 % interval), n_seeds, per_seed,
    n_images, n_classes (kept) and flagged (classes left out, with their positives)."""
    sources = tuple(cfg.sources if sources is None else sources)
    rows = []
    for name in names:
        parts = [(s, [s]) for s in sources] + ([("mean", list(sources))]
                                               if mean_row and len(sources) > 1 else [])
        for label, srcs in parts:
            m = macro_measure(cfg, name, srcs, split=split, by=by, seen=seen,
                              progress=progress, **extra)
            summ = m.summary()
            t = m.info["classes"]
            rows.append(dict(variant=name, source=label, mean=summ["mean"], lo=summ["lo"],
                             hi=summ["hi"], n_seeds=summ["n_seeds"],
                             per_seed=", ".join(f"{v:.3f}" for v in m.points),
                             n_classes=int(t["kept"].sum()),
                             flagged=", ".join(f"{r['class']} ({r['n_pos']})"
                                               for _, r in t[~t["kept"]].iterrows())))
    return pd.DataFrame(rows)


@replay.with_evidence
def seen_unseen_table(cfg: Config, names: Sequence[str], sources: Sequence[str] | None = None,
                      *, by: str | None = None, progress: bool = True) -> pd.DataFrame:
    """:func:`variant_table` of ``names`` on ``sources`` (default: the downstream ones) twice,
    on the classes the pre-training sources label and on those they do not, with ``group``
    "seen" or "unseen" (no mean row). A source without classes of one kind has no row in
    that group, and a group no source has is left out."""
    sources = tuple(cfg.downstream if sources is None else sources)
    parts = []
    for seen, group in ((True, "seen"), (False, "unseen")):
        srcs = [s for s in sources if has_classes(cfg, s, seen)]
        if srcs:
            parts.append(variant_table(cfg, names, srcs, by=by, seen=seen, mean_row=False,
                                       progress=progress).assign(group=group))
    if not parts:
        return pd.DataFrame(columns=["variant", "source", "mean", "lo", "hi", "n_seeds",
                                     "per_seed", "n_classes", "flagged", "group"])
    return pd.concat(parts)


@replay.with_evidence
def metric_table(cfg: Config, names: Sequence[str], sources: Sequence[str] | None = None, *,
                 split: str = "test", progress: bool = True) -> pd.DataFrame:
    """aF1, aACC and mAP (max-F1 thresholds, as the paper) of each variant and source over
    the profile's seeds, macro over the kept classes: columns variant, source, metric, mean,
    lo, hi (t-interval over seeds, truncated to [0, 1]), n_seeds. aAUC with its bootstrap interval is
    :func:`variant_table`."""
    sources = tuple(cfg.sources if sources is None else sources)
    seeds = SEEDS[cfg.profile]
    rows = []
    for name in names:
        for src in sources:
            per = {k: [] for k in ("aF1", "aACC", "mAP")}
            for seed in seeds:
                s = scored(cfg, name, seed, src, split=split, progress=progress)
                cols, _ = kept_columns(s, min_pos=MIN_POS[cfg.profile])
                pc = metrics.classification_metrics(s.labels[:, cols], s.probs[:, cols],
                                                    s.mask[:, cols], [s.classes[j] for j in cols])
                for k, v in (("aF1", "F1"), ("aACC", "ACC"), ("mAP", "AP")):
                    per[k].append(float(pc.attrs[k]) if cols else float("nan"))
            for k, vals in per.items():
                si = stats.seed_interval(np.array(vals), ALPHA, bounds=(0.0, 1.0))
                rows.append(dict(variant=name, source=src, metric=k, mean=si["mean"],
                                 lo=si["lo"], hi=si["hi"], n_seeds=si["n"]))
    return pd.DataFrame(rows)


def in_domain_measure(cfg: Config, name: str, **kw) -> Measure:
    """:func:`macro_measure` of variant ``name`` on every pre-training source."""
    return macro_measure(cfg, name, cfg.sources, **kw)


def has_classes(cfg: Config, source: str, seen: bool) -> bool:
    """Whether ``source`` has classes that the pre-training sources label (``seen``) or not
    (label spaces of ``cfg.data``'s world)."""
    known = set(union_classes(cfg.sources, cfg.data))
    return any((c in known) == seen for c in source_classes(source, cfg.data))


def split_sizes(cfg: Config, sources: Sequence[str], split: str = "test") -> str:
    """"<source> <n> images / <m> patients" of each source's ``split``, joined by "; "."""
    parts = []
    for s in sources:
        ds = make_dataset(cfg, [s], split)
        parts.append(f"{s} {len(ds)} images / {len(set(ds.table.patients))} patients")
    return "; ".join(parts)


@dataclasses.dataclass
class Study:
    """What a chapter shows of a study it may skip: whether this build ran it (``ran``), its
    tables by name (none when it did not run), the numbers the chapter's text quotes
    (``values``) and, when it did not run, the sentence the chapter prints instead
    (``note``). ``status`` says where its numbers come from: ``live`` (this build's runs),
    or a recorded study's status (fresh, stale, missing, damaged:
    :mod:`unichest_lib.evidence.record`), whose one-line ``caption`` the chapter shows."""

    ran: bool
    tables: dict = dataclasses.field(default_factory=dict)
    values: dict = dataclasses.field(default_factory=dict)
    note: str = ""
    status: str = "live"
    caption: str = ""


__all__ = ["ALPHA", "MIN_POS", "N_BOOT", "Measure", "Scored", "Study", "class_auc_replicates",
           "has_classes", "in_domain_measure", "kept_columns",
           "macro_measure", "metric_table", "patient_weights", "scored", "seen_unseen_table",
           "split_sizes", "variant_table"]
