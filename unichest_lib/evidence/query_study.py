"""Can zero-shot generalise? (issue #15): UniChest trained with each ``cfg.query_text`` —
class names (the paper), descriptions (MedKLIP) or an ensemble of phrasings
(:mod:`unichest_lib.model.query_text`) — over seeds, scored zero-shot on the classes no
pre-training source labels (Shenzhen's tuberculosis, PadChest's unseen classes) with every
query mode, each AUC with its 95 % interval over seeds and test patients and its paired
difference from the names-trained model queried the same way.

Every value other than ``"name"`` costs a Conquer and a Divide run per seed beyond the book's
own, so the book runs the study with the full ledger (:func:`query_text_on`).
:func:`query_text_table` measures it; :func:`query_text_study` is what the chapter shows.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..config import QUERY_TEXTS, Config
from ..evaluation.classification import QUERY_MODES
from . import replay
from .claims import zero_shot_sources
from .ledger import HOW_TO_RUN, study_on
from .measures import Measure, Study, macro_measure
from .variants import SEEDS, stored

#: The variant the study trains per value (UniChest: Conquer, then Divide).
STUDY_VARIANT = "UniChest"


def query_text_on(cfg: Config, full: bool | None = None) -> bool:
    """Whether chapter 04 runs the study: :func:`~.ledger.full_ledger` when ``full`` is given,
    the environment switch is set or the profile runs the full ledger; otherwise only when
    every run of the study is already stored or the study is recorded (a build never trains
    them unasked)."""
    return study_on(cfg, full, lambda: query_text_table.available(cfg))


def _query_text_stored(cfg: Config, values: Sequence[str] = QUERY_TEXTS, *args, **kw) -> bool:
    return all(stored(cfg.replace(query_text=v), (STUDY_VARIANT,), kw.get("seeds"))
               for v in values if v in QUERY_TEXTS)  # query_text_table rejects the others


@replay.recorded_table("query-text", _query_text_stored)
def query_text_table(cfg: Config, values: Sequence[str] = QUERY_TEXTS,
                     modes: Sequence[str] = QUERY_MODES, *, seeds=None, n_boot=None,
                     progress: bool = True) -> pd.DataFrame:
    """One row per (``query_text`` value, query mode ``by``, source with unseen classes, and
    their ``"mean"`` when there are several): the macro zero-shot AUC over the source's
    unseen classes of UniChest trained with that value, for every seed.

    Columns: ``query_text``, ``by``, ``source``; ``mean``, ``lo``, ``hi`` (pooled 95 %
    interval over seeds and test patients), ``per_seed``, ``n_classes`` (kept unseen
    classes) and ``flagged`` (left out, with their positives); ``vs_name``, ``vs_lo``,
    ``vs_hi``: minus the ``"name"``-trained model queried by the same mode, paired by seed and
    patient resample (NaN when ``"name"`` is not among ``values``); ``n_seeds``.
    """
    bad = [v for v in values if v not in QUERY_TEXTS]
    if bad or not values:
        raise ValueError(f"values {list(values)} must be a non-empty list of {QUERY_TEXTS}")
    bad = [m for m in modes if m not in QUERY_MODES]
    if bad or not modes:
        raise ValueError(f"modes {list(modes)} must be a non-empty list of {QUERY_MODES}")
    sources = zero_shot_sources(cfg)
    if not sources:
        raise ValueError(f"no downstream source of {list(cfg.downstream)} has classes the "
                         "pre-training sources leave unlabelled: nothing to score zero-shot")
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    parts = [(s, [s]) for s in sources] + ([("mean", sources)] if len(sources) > 1 else [])
    measures: dict[tuple, Measure] = {}
    rows = []
    for v in values:
        c = cfg.replace(query_text=v)
        for by in modes:
            for label, srcs in parts:
                m = macro_measure(c, STUDY_VARIANT, srcs, by=by, seen=False, seeds=seeds,
                                  n_boot=n_boot, progress=progress)
                measures[(v, by, label)] = m
                s, t = m.summary(), m.info["classes"]
                rows.append(dict(query_text=v, by=by, source=label, mean=s["mean"], lo=s["lo"],
                                 hi=s["hi"], per_seed=", ".join(f"{p:.3f}" for p in m.points),
                                 n_classes=int(t["kept"].sum()),
                                 flagged=", ".join(f"{r['source']}:{r['class']} ({r['n_pos']})"
                                                   for _, r in t[~t["kept"]].iterrows())))
    for row in rows:
        key = (row["query_text"], row["by"], row["source"])
        base = ("name",) + key[1:]
        d = ((measures[key] - measures[base]).summary() if base in measures
             else dict(mean=np.nan, lo=np.nan, hi=np.nan))
        row.update(vs_name=d["mean"], vs_lo=d["lo"], vs_hi=d["hi"], n_seeds=len(seeds))
    return pd.DataFrame(rows)


def query_text_study(cfg: Config, *, full: bool | None = None, progress: bool = True) -> Study:
    """The study as chapter 04 shows it: when some downstream source has unseen classes and
    :func:`query_text_on` (``full`` as there), the :func:`query_text_table` of every value and
    query mode under ``tables["query_text"]`` (its ``mean [lo, hi]`` views are
    :func:`unichest_lib.book.tables.query_text_views`); otherwise ``note`` says why not."""
    if not zero_shot_sources(cfg):
        return Study(False, note="No downstream source has a class that the pre-training "
                                 "sources leave unlabelled, so there is no unseen class to study.")
    if not query_text_on(cfg, full):
        return Study(False, note="Not in this build. The full ledger adds it (a Conquer and a "
                                 "Divide run per value of query_text and seed): "
                                 f"{HOW_TO_RUN}, or run this chapter with -p full_ledger True.")
    return Study(True, {"query_text": query_text_table(cfg, progress=progress)})


__all__ = ["STUDY_VARIANT", "query_text_on", "query_text_study", "query_text_table"]
