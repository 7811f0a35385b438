"""Does this build reproduce the record? The live teaching runs next to their recorded twins.

Chapters 02 and 03 train one seed of Conquer and of UniChest live. When the record holds the
same configuration and seed (:mod:`.replay`), chapter 07 puts the two side by side: the
test aAUC per source of the live run and of the recorded one, their difference, and whether
the live value lies inside the recorded 95 % interval over seeds and patients (the spread a
re-run should fall in). Another CPU or precision changes the numbers a little; a live value
outside the interval is worth a look.

Introduced in ``notebooks/07_claims.ipynb``.
"""

from __future__ import annotations

import pandas as pd

from ..config import Config
from ..training import store
from . import replay
from .measures import Study, macro_measure
from .variants import SEEDS, VARIANTS, variant_config

#: The runs the chapters train live, compared when the record holds them too.
TEACHING_RUNS = ("Conquer only", "UniChest")


def recorded_runs(cfg: Config, name: str, seeds, sources) -> bool:
    """Whether the record holds the test scores of variant ``name`` for every seed of ``seeds``
    on every source of ``sources``."""
    runs = [variant_config(cfg, name, sd) for sd in seeds]
    return all(replay.has_probs(c, name, s, "test", c.query_text) for c in runs for s in sources)


def reproduction_study(cfg: Config, names=TEACHING_RUNS, sources=None, *,
                       progress: bool = True) -> Study:
    """Per teaching run and pre-training source: the live test aAUC of this build's seed, the
    recorded aAUC of the same seed, their difference, the recorded interval over the
    profile's seeds, and whether the live value lies inside it (``sources``: default the
    pre-training ones). Runs not stored or not
    recorded are left out; when none is left, the study did not run (``note`` says why)."""
    seeds = SEEDS[cfg.profile]
    seed = seeds[0]
    sources = tuple(cfg.sources if sources is None else sources)
    rows = []
    for name in names:
        c = variant_config(cfg, name, seed)
        if not store.is_valid(c, VARIANTS[name].stage) or not recorded_runs(cfg, name, seeds,
                                                                         sources):
            continue
        for src in sources:
            one = dict(seeds=(seed,), progress=progress)
            live = replay.in_mode("live", macro_measure, cfg, name, [src], **one)
            rec = replay.in_mode("recorded", macro_measure, cfg, name, [src], **one)
            every = replay.in_mode("recorded", macro_measure, cfg, name, [src], seeds=seeds,
                                   progress=progress).summary()
            v, r = float(live.points[0]), float(rec.points[0])
            rows.append(dict(variant=name, source=src, seed=seed, live=v, recorded=r,
                             difference=v - r, lo=every["lo"], hi=every["hi"],
                             inside=bool(every["lo"] <= v <= every["hi"])))
    if not rows:
        return Study(False, note="no run of this build is also in the record at this profile "
                                 "(the record holds none, or the teaching runs are not stored)")
    table = pd.DataFrame(rows)
    return Study(True, {"reproduction": table},
                 values=dict(n=len(table), inside=int(table["inside"].sum()),
                             max_abs_difference=float(table["difference"].abs().max())))


__all__ = ["TEACHING_RUNS", "reproduction_study"]
