"""A readable summary of a tidy result table: the macro metrics per task and source.

A tidy table (:mod:`.classification`) has one row per (source, class, metric); a reader of
the command line wants one line per source: the mean of each per-class metric over the
*defined* classes (both labels present), under the paper's names (aAUC, aF1, aACC, mAP), and
how many classes went into it. :func:`summarise` recomputes those means from the per-class
rows (so a table filtered to some classes summarises correctly) and :func:`format_summary`
prints them as a small aligned table.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .metrics import MACRO, MACRO_NAMES


def summarise(df: pd.DataFrame, by: Sequence[str] = ("task", "source")) -> pd.DataFrame:
    """One row per group of ``by`` (the columns of it that ``df`` has; in order of first
    appearance): the mean over defined classes of every per-class metric, named as the
    paper's macro (AUC -> aAUC, ...), and ``classes``, how many classes were averaged.
    A group with no defined class keeps its row, with NaN metrics and 0 classes."""
    keys = [k for k in by if k in df.columns]
    if not keys:
        raise ValueError(f"a summary groups by columns {list(by)}; the table has none of them")
    groups = df[keys].drop_duplicates()
    index = pd.MultiIndex.from_frame(groups) if len(keys) > 1 else pd.Index(groups[keys[0]])
    rows = df[(df["class"] != MACRO) & df["defined"].astype(bool) & df["value"].notna()]
    names = [m for m in MACRO_NAMES if m in set(df["metric"])] + sorted(
        set(df.loc[df["class"] != MACRO, "metric"]) - set(MACRO_NAMES))
    means = rows.groupby(keys + ["metric"], sort=False)["value"].mean().unstack("metric")
    out = means.reindex(index=index, columns=names)
    out.columns = [MACRO_NAMES.get(m, m) for m in names]
    out["classes"] = rows.groupby(keys, sort=False)["class"].nunique().reindex(index) \
        .fillna(0).astype(int)
    return out.reset_index()


def format_summary(summary: pd.DataFrame, digits: int = 3) -> str:
    """:func:`summarise`'s table as aligned text (metrics to ``digits`` places, "-" = none)."""
    return summary.to_string(index=False, na_rep="-",
                             float_format=lambda v: f"{v:.{digits}f}")


__all__ = ["format_summary", "summarise"]
