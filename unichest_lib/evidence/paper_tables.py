"""The paper's comparison tables (Tables IV and V) regenerated with every baseline row.

Each row of :data:`ROWS` is a named variant (:data:`.variants.VARIANTS`) trained in the
same harness — same world, encoders, schedule, store, evaluation and statistics — and the
paper row it stands for (:data:`PAPER_ROWS`; the paper's numbers are in :data:`PAPER`, typed
from Dai et al. 2024, Tables IV, V and VI, and never used in a computation). :func:`table_iv`
gives the in-domain aAUC (with its pooled patient-bootstrap interval) and aF1, aACC, mAP (with
a t-interval over seeds, truncated to [0, 1]) per pre-training source; :func:`table_v` the zero-shot scores per
downstream source, split into classes the model was trained on (seen) and not (unseen);
:func:`cost_rows` each row's parameters, GFLOPs per image and measured training seconds
per epoch (from the stored run's history).

Introduced in ``notebooks/06_baselines.ipynb``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluation import cost
from ..model import count_parameters
from . import replay
from .ledger import HOW_TO_RUN, full_ledger, study_on
from .measures import (Study, has_classes, macro_measure, metric_table,
                       seen_unseen_table, variant_table)
from .variants import SEEDS, VARIANTS, stored, variant_history, variant_model

#: The rows of chapter 06, in the order the paper lists them (baselines first, UniChest last).
ROWS = ("one source", "Conquer only", "MedKLIP-style", "MGCA-style", "CLIP-style",
        "K = 1", "no L_SCL", "equal weights", "UniChest")
#: The paper rows each of ours stands for, most specific first: the first one with a number
#: for a (source, metric) is shown beside ours, and named.
PAPER_ROWS = {
    "one source": ("KAD-CXR14",),
    "Conquer only": ("UniChest (only Conquer stage)", "KAD-multi"),
    "MedKLIP-style": ("MedKLIP-multi",),
    "MGCA-style": (),
    "CLIP-style": ("CheXzero",),
    "K = 1": (),
    "no L_SCL": (),
    "equal weights": ("UniChest (with equal weights)",),
    "UniChest": ("UniChest",),
}
METRICS = ("aAUC", "aF1", "aACC", "mAP")
#: Rows that are new pre-training runs (one per seed): a default build at a profile without
#: the full ledger (``tutorial``) shows them only once stored (``make ledger`` trains them).
#: UniChest's rows are trained by chapters 02, 03 and 05 anyway.
EXPENSIVE_ROWS = ("MedKLIP-style", "MGCA-style", "CLIP-style")

# Dai et al. 2024: Table IV (in-domain), Table V (zero-shot, single-label sources give AUC, F1,
# ACC, AP in the same four columns) and Table VI (stage ablation), in METRICS order.
_T = {
    "KAD-CXR14": {"chestxray14": (0.8380, 0.4006, 0.8913, 0.3401),
                  "chexpert": (0.7455, 0.4296, 0.7658, 0.3901),
                  "vindr": (0.7711, 0.2399, 0.8410, 0.1740),
                  "shenzhen": (0.8764, 0.8037, 0.8000, 0.8947),
                  "openi": (0.6986, 0.2676, 0.8617, 0.1856),
                  "siim": (0.9162, 0.6561, 0.8348, 0.6872)},
    "KAD-multi": {"chestxray14": (0.8431, 0.4077, 0.8905, 0.3457),
                  "chexpert": (0.8819, 0.5912, 0.8713, 0.5626),
                  "vindr": (0.8716, 0.3698, 0.9390, 0.3202),
                  "shenzhen": (0.8794, 0.8419, 0.8547, 0.9180),
                  "openi": (0.7736, 0.3409, 0.9065, 0.2749),
                  "siim": (0.9016, 0.6515, 0.8395, 0.5847)},
    "MedKLIP-multi": {"chestxray14": (0.7915, 0.2994, 0.8691, 0.2313),
                      "chexpert": (0.7010, 0.4244, 0.7395, 0.3410),
                      "vindr": (0.7879, 0.2802, 0.9167, 0.2196),
                      "shenzhen": (0.8431, 0.7780, 0.7855, 0.8817),
                      "openi": (0.6440, 0.2270, 0.7943, 0.1469),
                      "siim": (0.8958, 0.6888, 0.8412, 0.6853)},
    "CheXzero": {"chestxray14": (0.6872, 0.2205, 0.7698, 0.1597),
                 "chexpert": (0.7537, 0.4488, 0.8136, 0.4069),
                 "vindr": (0.7407, 0.2354, 0.8562, 0.1713),
                 "shenzhen": (0.7801, 0.7302, 0.6692, 0.7969),
                 "openi": (0.6887, 0.2429, 0.8689, 0.1850),
                 "siim": (0.6879, 0.4722, 0.5588, 0.3240)},
    "UniChest (only Conquer stage)": {"chestxray14": (0.8468, 0.4143, 0.8957, 0.3543),
                                      "shenzhen": (0.9013, 0.8558, 0.8594, 0.9313),
                                      "siim": (0.9019, 0.6450, 0.8494, 0.6601)},
    "UniChest (with equal weights)": {"chestxray14": (0.8528, 0.4250, 0.8971, 0.3722),
                                      "shenzhen": (0.9463, 0.8851, 0.8838, 0.9508),
                                      "siim": (0.8687, 0.5867, 0.8234, 0.5507)},
    "UniChest": {"chestxray14": (0.8584, 0.4293, 0.8999, 0.3797),
                 "chexpert": (0.9005, 0.6446, 0.8912, 0.6328),
                 "vindr": (0.8807, 0.4028, 0.9501, 0.3520),
                 "shenzhen": (0.9499, 0.8906, 0.8913, 0.9598),
                 "openi": (0.7830, 0.3520, 0.9104, 0.2877),
                 "siim": (0.9260, 0.6928, 0.8807, 0.6929)},
}
#: ``PAPER[paper_row][source][metric]``: the paper's value (macro over classes; single-label
#: sources: the class's AUC, F1, ACC, AP).
PAPER = {row: {src: dict(zip(METRICS, vals)) for src, vals in per.items()}
         for row, per in _T.items()}
#: Where the paper's training differs from the row it stands for (shown under the table).
PAPER_NOTES = {
    "CheXzero": "CheXzero is pre-trained on MIMIC-CXR alone; ours on all four sources",
    "KAD-CXR14": "KAD-CXR14 is KAD's recipe on ChestX-ray14 alone; ours is UniChest's Conquer "
                 "stage on the validation source alone",
    "KAD-multi": "KAD-multi is KAD's own recipe on Multi-CXR; UniChest's Conquer stage is "
                 "the same design (Table VI gives it separately where it exists)",
}


def paper_value(row: str, source: str, metric: str) -> tuple[float, str]:
    """(the paper's number, the paper row it comes from) for our ``row``; (nan, "") if none."""
    if row not in PAPER_ROWS:
        raise ValueError(f"unknown row {row!r}; rows are {list(PAPER_ROWS)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; metrics are {list(METRICS)}")
    for paper_row in PAPER_ROWS[row]:
        v = PAPER.get(paper_row, {}).get(source, {}).get(metric)
        if v is not None:
            return v, paper_row
    return math.nan, ""


def _with_paper(df: pd.DataFrame) -> pd.DataFrame:
    vals = [paper_value(r, s, m) for r, s, m in zip(df["variant"], df["source"], df["metric"])]
    return df.assign(paper=[v for v, _ in vals], paper_row=[p for _, p in vals])


def table_iv(cfg: Config, rows: Sequence[str] = ROWS, *, progress: bool = True) -> pd.DataFrame:
    """Table IV: in-domain metrics of each row on each pre-training source's test split over
    the profile's seeds: columns variant, source, metric, mean, lo, hi, n_seeds, paper,
    paper_row. aAUC carries the pooled (seeds x patient bootstrap) interval of
    :func:`.measures.variant_table`, the others a t-interval over seeds truncated to [0, 1]."""
    rows = _check_rows(rows)
    auc = variant_table(cfg, rows, progress=progress).assign(metric="aAUC")
    other = metric_table(cfg, rows, progress=progress)
    cols = ["variant", "source", "metric", "mean", "lo", "hi", "n_seeds"]
    return _with_paper(pd.concat([auc[cols], other[cols]], ignore_index=True))


def table_v(cfg: Config, rows: Sequence[str] = ROWS, sources: Sequence[str] | None = None, *,
            by: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Table V: zero-shot aAUC of each row on each downstream source (queries ``by`` name,
    description or mixed; None: each row as it was trained, so MedKLIP-style reads
    descriptions and the others names), over all its classes and split into seen and unseen
    ones: columns
    variant, source, group ("all", "seen", "unseen"), mean, lo, hi, n_seeds, n_classes,
    paper, paper_row (the paper's AUC or aAUC, for "all")."""
    rows = _check_rows(rows)
    sources = tuple(cfg.downstream if sources is None else sources)
    parts = [variant_table(cfg, rows, sources, by=by, mean_row=False,
                           progress=progress).assign(group="all")]
    split = seen_unseen_table(cfg, rows, sources, by=by, progress=progress)
    df = pd.concat(parts + ([split] if len(split) else []), ignore_index=True)
    paper = [paper_value(r, s, "aAUC") if g == "all" else (math.nan, "")
             for r, s, g in zip(df["variant"], df["source"], df["group"])]
    cols = ["variant", "source", "group", "mean", "lo", "hi", "n_seeds", "n_classes", "flagged"]
    return df[cols].assign(paper=[v for v, _ in paper], paper_row=[p for _, p in paper])


def cost_rows(cfg: Config, rows: Sequence[str] = ROWS, *, progress: bool = True) -> pd.DataFrame:
    """Each row's cost at ``cfg``'s shapes: parameters (millions, the trained model of the
    first seed), GFLOPs per image (fvcore, the model's own class queries) and the measured
    seconds per training epoch of each stage it ran (mean over epochs and seeds, from the
    stored histories: wall time of the optimiser steps on this machine, validation excluded;
    NaN for runs stored before the trainer recorded it)."""
    rows = _check_rows(rows)
    out = []
    for name in rows:
        model = variant_model(cfg, name, SEEDS[cfg.profile][0], progress=progress)
        queries = model.class_queries().detach()
        macs, _, _ = cost.count_flops(model, cfg.image_size, queries)
        stage = VARIANTS[name].stage
        # UniChest builds its experts in every stage: count what the stage uses
        n = (cost.parameter_counts(model, model.stage)["params_total"]
             if model.cfg.method == "unichest" else count_parameters(model))
        rec = dict(variant=name, method=model.cfg.method, stage=stage, params_M=n / 1e6,
                   GFLOPs=2 * macs / 1e9)
        secs = {}
        for seed in SEEDS[cfg.profile]:
            h = variant_history(cfg, name, seed, progress=progress)
            if stage == "divide":  # the Divide run's own history holds only its stage
                h = pd.concat([variant_history(cfg, "Conquer only", seed, progress=progress,
                                       **dict(VARIANTS[name].overrides)), h])
            v = h[h["split"] == "valid"]
            for st, part in v.groupby("stage"):
                col = part["train_seconds"] if "train_seconds" in part else pd.Series(dtype=float)
                secs.setdefault(st, []).extend(col.dropna().tolist())
        for st in ("conquer", "divide", "continued"):
            if st in secs or (st == "divide" and stage == "divide"):
                vals = secs.get(st, [])
                rec[f"{st}_s_per_epoch"] = float(np.mean(vals)) if vals else math.nan
        out.append(rec)
    return pd.DataFrame(out)


def _costs_stored(cfg: Config, rows: Sequence[str] = ROWS, **kw) -> bool:
    return stored(cfg, list(_check_rows(rows)))


#: The measured training seconds come from every seed's run: recorded with the study, and
#: read from the record when this build has not trained every row (a default build).
cost_rows = replay.recorded_table("costs", _costs_stored)(cost_rows)


def cost_study(cfg: Config, rows: Sequence[str] = ROWS, *, full: bool | None = None,
               progress: bool = True) -> Study:
    """:func:`cost_rows` as chapter 06 shows it (``tables["costs"]``, with where its numbers
    come from): with the full ledger, or when every row of every seed is stored or the table
    recorded; otherwise ``note`` says how to get it (it reads a trained run of every row)."""
    if not study_on(cfg, full, lambda: cost_rows.available(cfg, rows)):
        return Study(False, note="Not in this build: the costs read every row's trained runs. "
                                 f"{HOW_TO_RUN}.")
    t = cost_rows(cfg, rows, progress=progress)
    ev = t.attrs.get("evidence")
    return Study(True, {"costs": t}, status=getattr(ev, "status", "live"),
                 caption=getattr(ev, "caption", ""))


def versus(cfg: Config, rows: Sequence[str] = ROWS, reference: str = "UniChest", *,
           by: str | None = None, progress: bool = True) -> pd.DataFrame:
    """``reference`` minus each other row, paired on the same seeds and test patients: the
    in-domain aAUC (mean over the pre-training sources) and the zero-shot aAUC (mean over the
    downstream sources with such classes) on seen and on unseen classes. Columns comparison,
    setting, mean, lo, hi, n_seeds, per_seed, verdict (of "reference is greater", the ledger's rule)."""
    rows = _check_rows(list(rows) + ([reference] if reference not in rows else []))
    settings = [("in-domain", tuple(cfg.sources), None, None)]
    for seen, label in ((True, "zero-shot, seen classes"), (False, "zero-shot, unseen classes")):
        srcs = tuple(s for s in cfg.downstream if has_classes(cfg, s, seen))
        if srcs:
            settings.append((label, srcs, by, seen))
    out = []
    for label, srcs, q, seen in settings:
        ref = macro_measure(cfg, reference, srcs, by=q, seen=seen, progress=progress)
        for name in rows:
            if name == reference:
                continue
            d = (ref - macro_measure(cfg, name, srcs, by=q, seen=seen, progress=progress)
                 ).summary()
            out.append(dict(comparison=f"{reference} − {name}", setting=label, mean=d["mean"],
                            lo=d["lo"], hi=d["hi"], n_seeds=d["n_seeds"],
                            per_seed=", ".join(f"{v:+.3f}" for v in d["per_seed"]),
                            verdict=d["verdict"]))
    return pd.DataFrame(out)


#: The chapter's three views of a row, as :func:`versus` names its settings, with the short
#: name their glued values take in the chapter's text (:func:`standing`).
VIEWS = {"in-domain": "in_domain", "zero-shot, seen classes": "seen",
         "zero-shot, unseen classes": "unseen"}


def ranking_table(t4: pd.DataFrame, t5: pd.DataFrame) -> pd.DataFrame:
    """Each row's mean aAUC and rank (1 = highest) in the views of :data:`VIEWS`: in-domain
    (Table IV's mean over the pre-training sources) and zero-shot on seen and on unseen
    classes (Table V's mean over the downstream sources that have such classes). Columns
    (view, "aAUC") and (view, "rank"), one row per variant, ordered by the in-domain rank."""
    views = {"in-domain": t4[(t4["metric"] == "aAUC") & (t4["source"] == "mean")]
             .set_index("variant")["mean"]}
    for group, view in (("seen", "zero-shot, seen classes"),
                        ("unseen", "zero-shot, unseen classes")):
        part = t5[t5["group"] == group]
        if len(part):
            views[view] = part.groupby("variant", sort=False)["mean"].mean()
    means = pd.DataFrame(views)
    ranks = means.rank(ascending=False, method="min")
    out = pd.DataFrame({(view, col): (means[view] if col == "aAUC" else ranks[view].astype("Int64"))
                        for view in means for col in ("aAUC", "rank")})
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["view", None])
    out.index.name = "variant"
    return out.sort_values(("in-domain", "rank"), kind="stable")


def standing(ranks: pd.DataFrame, vs: pd.DataFrame, reference: str = "UniChest") -> dict:
    """Where ``reference`` stands, per view of :data:`VIEWS` (``<view>`` its short name):
    ``<view>_rank`` and ``<view>_aauc`` from :func:`ranking_table`; ``<view>_ahead``,
    ``<view>_behind`` and ``<view>_unclear``, the rows whose paired difference (:func:`versus`)
    has a 95 % interval wholly above zero, wholly below it, or across it ("no row" when none);
    and ``n_rows``. A view the tables lack gives NaN and "n/a", so a chapter's text always
    finds its values."""
    out: dict = {"n_rows": len(ranks)}
    if vs.empty:
        vs = pd.DataFrame(columns=["comparison", "setting", "lo", "hi"])
    for view, short in VIEWS.items():
        have = view in ranks.columns.get_level_values(0) and reference in ranks.index
        rank = ranks.loc[reference, (view, "rank")] if have else pd.NA
        out[f"{short}_rank"] = "n/a" if pd.isna(rank) else int(rank)
        out[f"{short}_aauc"] = float(ranks.loc[reference, (view, "aAUC")]) if have else math.nan
        part = vs[(vs["setting"] == view)
                  & vs["comparison"].astype(str).str.startswith(f"{reference} − ")]
        others = [c.split(" − ", 1)[1] for c in part["comparison"]]
        picks = {"ahead": part["lo"] > 0, "behind": part["hi"] < 0}
        picks["unclear"] = ~(picks["ahead"] | picks["behind"])
        for key, pick in picks.items():
            chosen = [name for name, p in zip(others, pick) if p]
            out[f"{short}_{key}"] = ", ".join(chosen) or ("no row" if others else "n/a")
    return out


def rows_to_run(cfg: Config, rows: Sequence[str] = ROWS, full: bool | None = None
                ) -> tuple[list[str], list[str]]:
    """(the rows this build measures, the rows it leaves out): every row with the full ledger
    (:func:`.ledger.full_ledger`); otherwise an :data:`EXPENSIVE_ROWS` row only when every
    seed of it is already in the store or recorded (its in-domain test scores: chapter 06's
    record, read as a whole)."""
    from .reproduce import recorded_runs

    rows = _check_rows(rows)
    if full_ledger(cfg, full):
        return rows, []
    keep, left = [], []
    for name in rows:
        ok = (name not in EXPENSIVE_ROWS or stored(cfg, (name,))
              or recorded_runs(cfg, name, SEEDS[cfg.profile], cfg.sources))
        (keep if ok else left).append(name)
    return keep, left


def _check_rows(rows: Sequence[str]) -> list[str]:
    rows = list(rows)
    bad = [r for r in rows if r not in VARIANTS or r not in PAPER_ROWS]
    if bad:
        raise ValueError(f"unknown row(s) {bad}; the baseline rows are {list(ROWS)}")
    return rows


def wide(df: pd.DataFrame, index: str | Sequence[str] = "variant",
         columns: str | Sequence[str] = ("source", "metric")) -> pd.DataFrame:
    """A reader's table: ``mean [lo, hi]`` of ours, and the paper's number, per cell."""
    txt = df.assign(ours=[f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(m) else "n/a"
                          for m, lo, hi in zip(df["mean"], df["lo"], df["hi"])],
                    paper=[f"{p:.3f}" if np.isfinite(p) else "—" for p in df["paper"]])
    return txt.pivot_table(index=index, columns=list(columns) if not isinstance(columns, str)
                           else columns, values=["ours", "paper"], aggfunc="first",
                           sort=False)


__all__ = ["EXPENSIVE_ROWS", "METRICS", "PAPER", "PAPER_NOTES", "PAPER_ROWS", "ROWS", "VIEWS",
           "cost_rows", "cost_study", "paper_value", "ranking_table", "rows_to_run", "standing",
           "table_iv", "table_v", "versus", "wide"]
