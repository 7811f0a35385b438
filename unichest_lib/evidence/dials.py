"""The heterogeneity study per dial (issue #14): at each level of one dial (the others at 1),
the specialisation headroom on top of the Conquer encoder and what Divide realises of it.

``"heterogeneity"`` is the joint knob (every dial together); the single dials are
``config.DIALS``. Level 1 of every dial is the default world, measured once. Every cell is the
3-seed, patient-bootstrap measure of :mod:`.headroom` and of the claim "UniChest beats Conquer
continued", so a cell costs a Conquer, its continued control, a Divide and the heads per seed:
the study is part of the full ledger (``make ledger``). :func:`dial_table` measures the cells,
:func:`meaning_by_class` the classes the label-meaning dial redefines, and :func:`dial_study`
is both as the chapter shows them.

Introduced in ``notebooks/05_ablations.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..config import DIALS, Config, set_dial
from . import replay
from .headroom import headroom_by_class, headroom_measure
from .measures import Study, in_domain_measure
from .variants import LEVELS, SEEDS, stored

#: The knobs of the study: the joint one first.
STUDY_DIALS = ("heterogeneity",) + DIALS
#: The dials whose level-0 worlds the full ledger trains, per profile. At ``smoke`` (the tests
#: and CI) the two the claims need; the others take the stored-only path, as in a default build.
TRAINED_DIALS = {"smoke": ("heterogeneity", "label_meaning"), "tutorial": STUDY_DIALS,
                 "paper": STUDY_DIALS}
#: The trained runs a cell reads, per seed: the headroom's Conquer, UniChest and its control.
CELL_VARIANTS = ("Conquer only", "UniChest", "Conquer continued")
_CELL_COLUMNS = ("headroom", "headroom_lo", "headroom_hi", "realised", "realised_lo",
                 "realised_hi")


def dial_world(cfg: Config, dial: str, level: float) -> Config:
    """``cfg`` with ``dial`` at ``level`` (``"heterogeneity"``: every dial)."""
    if dial == "heterogeneity":
        return cfg.replace(heterogeneity=float(level))
    if dial not in DIALS:
        raise ValueError(f"unknown dial {dial!r}; choose heterogeneity or one of {DIALS}")
    return set_dial(cfg, dial, level)


def dial_cell(cfg: Config, *, progress: bool = True) -> dict:
    """Headroom (oracle − shared head) and realised gain (UniChest − Conquer continued), mean
    over the in-domain sources, with 95 % intervals over seeds and test patients."""
    h = headroom_measure(cfg, cfg.sources, progress=progress).summary()
    g = (in_domain_measure(cfg, "UniChest", progress=progress)
         - in_domain_measure(cfg, "Conquer continued", progress=progress)).summary()
    return dict(headroom=h["mean"], headroom_lo=h["lo"], headroom_hi=h["hi"],
                realised=g["mean"], realised_lo=g["lo"], realised_hi=g["hi"])


def cell_stored(cfg: Config, seeds=None) -> bool:
    """Whether every run :func:`dial_cell` reads for ``cfg``'s world is in the artifact store
    for every seed (the heads themselves are cheap: they train on the stored Conquer)."""
    return stored(cfg, CELL_VARIANTS, seeds)


def dial_table(cfg: Config, dials: Sequence[str] = STUDY_DIALS, levels: Sequence[float] = LEVELS,
               *, stored_only: bool = False, trained: Sequence[str] | None = None,
               progress: bool = True) -> pd.DataFrame:
    """One row per dial and level: :func:`dial_cell` of that world (the default world, every
    dial at 1, is measured once and shared by every dial's level-1 row). ``measured`` says
    whether the row was measured: with ``stored_only`` a world whose runs are not all in the
    store (:func:`cell_stored`) is not trained, and its row is NaN with ``measured`` False, so
    a default build shows what an earlier ``make ledger`` (or a single cell) measured.
    ``trained`` (default: every dial) limits the dials whose worlds may be trained."""
    rows, seen = [], {}
    for d in dials:
        for lvl in levels:
            c = dial_world(cfg, d, lvl)
            key = (c.heterogeneity, c.dials)
            if key not in seen:
                measured = ((not stored_only and (trained is None or d in trained))
                            or cell_stored(c))
                seen[key] = (dial_cell(c, progress=progress) if measured
                             else dict.fromkeys(_CELL_COLUMNS, np.nan)), measured
            cell, measured = seen[key]
            rows.append(dict(dial=d, level=float(lvl), **cell, measured=measured,
                             n_seeds=len(SEEDS[cfg.profile]) if measured else 0))
    return pd.DataFrame(rows)


def meaning_by_class(cfg: Config, levels: Sequence[float] = LEVELS, *, stored_only: bool = False,
                     progress: bool = True) -> pd.DataFrame:
    """The headroom per source on the classes the label-meaning dial redefines (the broad
    definitions of :data:`unichest_lib.data.world.sources.BROAD_DEFINITIONS`), at each level of
    that dial (:func:`.headroom.headroom_by_class`; the same stored runs as :func:`dial_table`).
    With ``stored_only``, levels whose Conquer runs are not all stored are left out."""
    from ..data.world.sources import BROAD_DEFINITIONS

    redefined = sorted({c for d in BROAD_DEFINITIONS.values() for c in d})
    parts = []
    for lvl in levels:
        c = dial_world(cfg, "label_meaning", lvl)
        if stored_only and not stored(c, ("Conquer only",)):
            continue
        parts.append(headroom_by_class(c, redefined, progress=progress).assign(
            label_meaning=float(lvl)))
    if not parts:
        return pd.DataFrame(columns=["source", "class", "mean", "lo", "hi", "shared_auc",
                                     "oracle_auc", "n_seeds", "label_meaning"])
    return pd.concat(parts, ignore_index=True)


def _worlds_stored(cfg: Config, *args, **kw) -> bool:
    return all(cell_stored(dial_world(cfg, d, lvl)) for d in STUDY_DIALS for lvl in LEVELS)


@replay.recorded_table("dials", _worlds_stored)
def full_dial_table(cfg: Config, *, trained: Sequence[str] | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """:func:`dial_table` as the full ledger measures it (``trained`` dials' worlds trained,
    the others read from the store), recorded as a whole: a later build shows it without
    training."""
    return dial_table(cfg, stored_only=False, trained=trained, progress=progress)


@replay.recorded_table("dials-by-class", _worlds_stored)
def full_meaning_by_class(cfg: Config, *, progress: bool = True) -> pd.DataFrame:
    """:func:`meaning_by_class` at every level, recorded as a whole."""
    return meaning_by_class(cfg, stored_only=False, progress=progress)


def dial_study(cfg: Config, *, full: bool, progress: bool = True) -> Study:
    """The study as chapter 05 shows it, in the embedded world: :func:`dial_table` under
    ``tables["dials"]`` and :func:`meaning_by_class` under ``tables["by_class"]``. With ``full``
    (the full ledger asked for, :attr:`.ledger.Plan.train`: never merely because the record
    holds the expensive claims) every world is measured, training what is missing; when the
    record holds the full study it is shown from the record; otherwise only the worlds whose
    runs are stored. Real data has no dial: then nothing runs and ``note`` says so."""
    if cfg.data != "embedded":
        return Study(False, note="the dial studies need the embedded world")
    trained = TRAINED_DIALS[cfg.profile]
    if full or (full_dial_table.available(cfg, trained=trained)
                and full_meaning_by_class.available(cfg)):
        return Study(True, {"dials": full_dial_table(cfg, trained=trained, progress=progress),
                            "by_class": full_meaning_by_class(cfg, progress=progress)})
    return Study(True, {"dials": dial_table(cfg, stored_only=True, progress=progress,
                                            trained=trained),
                        "by_class": meaning_by_class(cfg, stored_only=True,
                                                     progress=progress)})


__all__ = ["CELL_VARIANTS", "STUDY_DIALS", "TRAINED_DIALS", "cell_stored", "dial_cell",
           "dial_study", "dial_table", "dial_world", "full_dial_table", "full_meaning_by_class",
           "meaning_by_class"]
