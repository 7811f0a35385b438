"""How long Conquer trains: the recorded study behind a profile's ``conquer_epochs``.

``bench/bench_schedule.py`` trains Conquer for several schedule lengths E (one warm-up +
cosine schedule over the E epochs each) on training seeds no chapter uses, and records per
run the selected epoch's validation aAUC: on ``val_source`` (what selects the checkpoint) and
the mean over the validation splits of all pre-training sources (less noisy, never used for
selection). **The rule:** the plateau is the shortest E whose mean over seeds of that
all-source validation aAUC lies within a tolerance of the best E's mean. Test numbers are
recorded for the record only; the rule never reads them.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Config
from . import record
from .measures import Study

STUDY = "schedule"
#: The configuration fields the study sets itself: its record stays fresh when they change.
FREE = ("conquer_epochs", "seed")
#: The plateau tolerance in aAUC: about half the epoch-to-epoch noise of one tutorial run.
TOLERANCE = 0.005


def summary(runs: pd.DataFrame, tolerance: float = TOLERANCE) -> tuple[pd.DataFrame, int]:
    """Per schedule length: the mean and 95 % t-interval over seeds of the selected epoch's
    all-source validation aAUC (and the mean best epoch and test aAUC); and the E the rule
    chooses."""
    from scipy import stats

    rows = []
    for e, g in runs.groupby("epochs"):
        v = g["val_all_aAUC"].to_numpy(float)
        half = (stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
                if len(v) > 1 else float("nan"))
        rows.append(dict(epochs=int(e), seeds=len(v), val_all_mean=v.mean(),
                         ci_low=v.mean() - half, ci_high=v.mean() + half,
                         best_epoch_mean=g["best_epoch"].mean(),
                         test_all_mean=g["test_all_aAUC"].mean()))
    s = pd.DataFrame(rows).sort_values("epochs", ignore_index=True)
    chosen = int(s.loc[s["val_all_mean"] >= s["val_all_mean"].max() - tolerance, "epochs"].min())
    return s, chosen


def schedule_study(cfg: Config) -> Study:
    """The recorded schedule study of ``cfg.profile``: its runs, per-epoch curves and summary,
    the rule's choice next to the profile's ``conquer_epochs`` (``relation``: shorter than,
    as long as, longer than), the lengths measured, the gap of the profile's length to the
    best measured one, whether the choice is the longest length measured (``at_edge``: the
    plateau may lie beyond), and the record's caption."""
    rec = record.read(cfg.profile, STUDY, cfg=cfg)
    if rec.status in ("missing", "damaged"):
        return Study(ran=False, note=rec.message, status=rec.status, caption=rec.caption())
    runs, curves = rec.tables["runs"], rec.tables["curves"]
    tol = float(rec.provenance.get("tolerance", TOLERANCE))
    table, chosen = summary(runs, tol)
    means = table.set_index("epochs")["val_all_mean"]
    e = cfg.conquer_epochs
    relation = "shorter than" if e < chosen else "as long as" if e == chosen else "longer than"
    return Study(ran=True, tables=dict(runs=runs, curves=curves, summary=table),
                 values=dict(chosen=chosen, tolerance=tol, epochs=e,
                             seeds=sorted(runs["seed"].unique().tolist()),
                             lengths=", ".join(str(int(x)) for x in means.index),
                             gap=float(means.max() - means[e]) if e in means else float("nan"),
                             relation=relation, at_edge=chosen == int(means.index.max())),
                 status=rec.status, caption=rec.caption())


__all__ = ["FREE", "STUDY", "TOLERANCE", "schedule_study", "summary"]
