"""The heterogeneity study per dial (issue #14): at each level of one dial (the others at 1),
the specialisation headroom on top of the Conquer encoder and what Divide realises of it.

``"heterogeneity"`` is the joint knob (every dial together); the single dials are
``config.DIALS``. Level 1 of every dial is the default world, measured once. Every cell is the
3-seed, patient-bootstrap measure of :mod:`.headroom` and of the claim "UniChest beats Conquer
continued", so a cell costs a Conquer, its continued control, a Divide and the heads per seed:
the study is part of the full ledger (``make ledger``).

Introduced in ``notebooks/05_ablations.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..config import DIALS, Config, set_dial
from .headroom import headroom_by_class, headroom_measure
from .measures import in_domain_measure
from .variants import LEVELS, SEEDS

#: The knobs of the study: the joint one first.
STUDY_DIALS = ("heterogeneity",) + DIALS


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


def dial_study(cfg: Config, dials: Sequence[str] = STUDY_DIALS, levels: Sequence[float] = LEVELS,
               *, progress: bool = True) -> pd.DataFrame:
    """One row per dial and level: :func:`dial_cell` of that world (the default world, every
    dial at 1, is measured once and shared by every dial's level-1 row)."""
    rows, seen = [], {}
    for d in dials:
        for lvl in levels:
            c = dial_world(cfg, d, lvl)
            key = (c.heterogeneity, c.dials)
            if key not in seen:
                seen[key] = dial_cell(c, progress=progress)
            rows.append(dict(dial=d, level=float(lvl), **seen[key],
                             n_seeds=len(SEEDS[cfg.profile])))
    return pd.DataFrame(rows)


def meaning_by_class(cfg: Config, levels: Sequence[float] = LEVELS, *,
                     progress: bool = True) -> pd.DataFrame:
    """The headroom per source on the classes the label-meaning dial redefines (the broad
    definitions of :data:`unichest_lib.data.world.sources.BROAD_DEFINITIONS`), at each level of
    that dial (:func:`.headroom.headroom_by_class`; the same stored runs as :func:`dial_study`)."""
    from ..data.world.sources import BROAD_DEFINITIONS

    redefined = sorted({c for d in BROAD_DEFINITIONS.values() for c in d})
    return pd.concat([headroom_by_class(dial_world(cfg, "label_meaning", lvl), redefined,
                                        progress=progress).assign(label_meaning=float(lvl))
                      for lvl in levels], ignore_index=True)


__all__ = ["STUDY_DIALS", "dial_cell", "dial_study", "dial_world", "meaning_by_class"]
