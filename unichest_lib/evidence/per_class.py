"""The paper's per-category views (Figs. 4–6) and its Table I, measured with intervals.

:func:`class_table` gives the AUC of each class of one source for a list of variants, over
the profile's seeds, with the pooled 95 % interval of :mod:`.measures` (seeds and a patient
bootstrap on **the same resamples** for every variant and seed, those of
:func:`.measures.macro_measure` on that split), so a class's difference between two variants
is paired; each row also carries the paired difference ``reference`` − row and its verdict.
Fig. 4 is this table on ChestX-ray14 and Open-I, Figs. 5 and 6 on PadChest's classes that
the pre-training sources label (seen) and those they do not (unseen): :func:`figure_views`.

:func:`table_i` is Table I in this harness: UniChest, not fine-tuned, against a model
pre-trained on **one** source and then fine-tuned on ``source``'s training split (the "one
source" variant, our Conquer recipe on the validation source, fine-tuned by
:func:`unichest_lib.evaluation.finetune.fine_tune_scores` through the cache of
:func:`.transfer.transfer_predictions`), AUC per class of ``source``'s test split and their
mean. The paper's rows are other systems (ConVIRT, GLoRIA, BioViL, MedKLIP, KAD) pre-trained
on MIMIC-CXR: :data:`PAPER_TABLE_I` holds its numbers, typed and never computed with.

Introduced in ``notebooks/06_baselines.ipynb``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluation import stats
from . import replay
from .measures import (MIN_POS, N_BOOT, Measure, Study, class_auc_replicates, has_classes,
                       kept_columns, patient_weights, scored)
from .transfer import transfer_predictions
from .variants import SEEDS, stored

#: The rows of the per-class figures, when the chapter has them: the baselines (KAD-style is
#: "Conquer only") and UniChest, which each figure's paired differences are taken from.
FIGURE_ROWS = ("Conquer only", "MedKLIP-style", "MGCA-style", "CLIP-style", "UniChest")
#: The paper's per-category figures: key -> (title, source, seen), ``seen`` None for all
#: classes, True for those some pre-training source labels, False for the others.
FIGURES = {"fig4_left": ("Fig. 4, left: ChestX-ray14", "chestxray14", None),
           "fig4_right": ("Fig. 4, right: Open-I", "openi", None),
           "fig5": ("Fig. 5: PadChest, seen classes", "padchest", True),
           "fig6": ("Fig. 6: PadChest, unseen classes", "padchest", False)}
#: The rows of :func:`table_i`.
FINE_TUNED = "one source, fine-tuned"
TABLE_I_ROWS = ("UniChest", "one source", FINE_TUNED)
DIFFERENCE = f"UniChest − {FINE_TUNED}"
#: Dai et al. 2024, Table I (AUC on ChestX-ray14 after fine-tuning, pre-trained on MIMIC-CXR;
#: UniChest not fine-tuned): mean, then the classes in ChestX-ray14's order.
_PAPER_CLASSES = ("atelectasis", "cardiomegaly", "pleural effusion", "infiltration", "mass",
                  "nodule", "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema",
                  "fibrosis", "pleural thickening", "hernia")
_PAPER_T1 = """
ConVIRT   0.808 0.771 0.867 0.825 0.703 0.818 0.761 0.722 0.857 0.747 0.854 0.901 0.809 0.771 0.909
GLoRIA    0.800 0.760 0.855 0.818 0.700 0.814 0.749 0.715 0.828 0.739 0.832 0.887 0.813 0.767 0.921
BioViL    0.800 0.765 0.871 0.824 0.697 0.819 0.752 0.710 0.845 0.742 0.842 0.871 0.821 0.759 0.888
MedKLIP   0.801 0.764 0.849 0.823 0.697 0.820 0.747 0.712 0.839 0.751 0.848 0.879 0.817 0.777 0.892
KAD       0.825 0.785 0.897 0.840 0.713 0.836 0.771 0.740 0.874 0.753 0.860 0.916 0.829 0.778 0.961
UniChest  0.858 0.823 0.922 0.861 0.739 0.850 0.778 0.777 0.933 0.795 0.893 0.958 0.877 0.837 0.977
"""
#: ``PAPER_TABLE_I``: one row per paper method, columns "mean" and the classes.
PAPER_TABLE_I = pd.DataFrame(
    {line.split()[0]: [float(v) for v in line.split()[1:]]
     for line in _PAPER_T1.strip().splitlines()}, index=("mean",) + _PAPER_CLASSES).T


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without positives
        return np.nanmean(a, axis=axis)


def _measures(scores, classes: Sequence[str], cols: Sequence[int], w: np.ndarray,
              what: str, info: dict) -> dict[str, Measure]:
    """{class: Measure, "mean": Measure of the macro AUC} of one row from its per-seed
    :class:`~.measures.Scored` (or probabilities on the same split) ``scores``."""
    auc = np.stack([class_auc_replicates(s, w, cols) for s in scores])  # (seeds, B + 1, k)
    out = {classes[j]: Measure(auc[:, 0, k], auc[:, 1:, k], dict(info, what=what,
                                                                 cls=classes[j]))
           for k, j in enumerate(cols)}
    macro = _nanmean(auc, axis=2)
    out["mean"] = Measure(macro[:, 0], macro[:, 1:], dict(info, what=what, cls="mean"))
    return out


def class_measures(cfg: Config, name: str, source: str, *, split: str = "test",
                   by: str | None = None, seen: bool | None = None, seeds=None, n_boot=None,
                   progress: bool = True, **extra) -> tuple[dict[str, Measure], pd.DataFrame]:
    """({class: :class:`~.measures.Measure`, and "mean": the macro AUC}, the classes table of
    :func:`~.measures.kept_columns`) of variant ``name`` on ``source``'s ``split``: each kept
    class's AUC per seed with its replicates on the patient resamples that
    :func:`~.measures.macro_measure` uses there (``seen`` selects seen or unseen classes)."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    scores = [scored(cfg, name, seed, source, split=split, by=by, progress=progress, **extra)
              for seed in seeds]
    cols, table = kept_columns(scores[0], seen=seen, min_pos=MIN_POS[cfg.profile])
    w = patient_weights(scores[0].patients, n_boot, f"{source}/{split}/{cfg.heterogeneity}")
    info = dict(sources=[source], split=split, seeds=list(seeds), n_boot=n_boot)
    if not cols:
        return {}, table
    return _measures(scores, scores[0].classes, cols, w, name, info), table


def _row(m: Measure, kind: str) -> dict:
    s = m.summary()
    low = 0.0 if kind == "score" else -1.0  # a normal interval may spill over the range
    return dict(mean=s["mean"], lo=max(s["lo"], low), hi=min(s["hi"], 1.0),
                n_seeds=s["n_seeds"], per_seed=", ".join(f"{v:.3f}" for v in m.points),
                verdict=s["verdict"] if kind == "difference" else "")


@replay.with_evidence
def class_table(cfg: Config, names: Sequence[str], source: str, *, split: str = "test",
                by: str | None = None, seen: bool | None = None, reference: str = "UniChest",
                progress: bool = True) -> pd.DataFrame:
    """AUC of every kept class of ``source`` (``seen``: only seen or unseen classes) for each
    variant of ``names``, over the profile's seeds: columns variant, source, class, n_pos,
    mean, lo, hi (pooled 95 % interval over seeds and test patients, clipped to [0, 1]),
    n_seeds, per_seed, and, when ``reference`` is among ``names``, ``diff``, ``diff_lo``,
    ``diff_hi`` and ``verdict``: ``reference`` − the row, paired by seed and resample, with
    the verdict of "``reference`` is greater" (empty on ``reference``'s own rows).
    ``attrs["flagged"]`` names the classes left out (too few positives or negatives)."""
    ms, tables = {}, {}
    for name in names:
        ms[name], tables[name] = class_measures(cfg, name, source, split=split, by=by,
                                                seen=seen, progress=progress)
    rows = []
    for name in names:
        n_pos = tables[name].set_index("class")["n_pos"]
        for cls, m in ms[name].items():
            if cls == "mean":
                continue
            row = dict(variant=name, source=source, **{"class": cls}, n_pos=int(n_pos[cls]),
                       **_row(m, "score"))
            ref = ms.get(reference, {}).get(cls)
            d = _row(ref - m, "difference") if ref is not None and name != reference else {}
            row.update(diff=d.get("mean", np.nan), diff_lo=d.get("lo", np.nan),
                       diff_hi=d.get("hi", np.nan), verdict=d.get("verdict", ""))
            rows.append(row)
    out = pd.DataFrame(rows, columns=["variant", "source", "class", "n_pos", "mean", "lo",
                                      "hi", "n_seeds", "per_seed", "diff", "diff_lo",
                                      "diff_hi", "verdict"])
    left = pd.concat([t[~t["kept"]] for t in tables.values()]).drop_duplicates("class")
    out.attrs["flagged"] = ", ".join(f"{r['class']} ({r['n_pos']})" for _, r in left.iterrows())
    return out


def figure_views(cfg: Config) -> list[str]:
    """The keys of the :data:`FIGURES` this configuration has: the source among its
    pre-training or downstream sources, and (for a seen or unseen view) with such classes."""
    have = set(cfg.sources) | set(cfg.downstream)
    return [k for k, (_, src, seen) in FIGURES.items()
            if src in have and (seen is None or has_classes(cfg, src, seen))]


def view_table(cfg: Config, names: Sequence[str], view: str, *, by: str | None = None,
               reference: str = "UniChest", progress: bool = True) -> pd.DataFrame:
    """:func:`class_table` of figure ``view`` (a key of :data:`FIGURES`) for ``names``; a
    downstream source is queried ``by`` (None: as each row was trained), a pre-training
    source as trained. ``attrs["title"]`` is the figure's title and ``attrs["note"]`` says
    which classes were left out and where ``reference`` stands (:func:`standing`); a view this
    configuration lacks gives an empty table whose note says so."""
    title, src, seen = FIGURES[view]
    if view not in figure_views(cfg):
        out = pd.DataFrame(columns=["variant", "source", "class", "mean", "lo", "hi",
                                    "verdict"])
        out.attrs.update(title=title, note=f"{title}: not in this configuration (no {src}, "
                                            "or no such classes in it).")
        return out
    t = class_table(cfg, names, src, seen=seen, by=None if src in cfg.sources else by,
                    reference=reference, progress=progress)
    t.attrs.update(title=title, note=f"Left out (fewer than {MIN_POS[cfg.profile]} positives "
                                     f"or negatives): {t.attrs['flagged'] or 'none'}. "
                                     f"{standing(t, reference)}.")
    return t


def standing(table: pd.DataFrame, reference: str = "UniChest") -> str:
    """One line per other variant of a :func:`class_table`: on how many of its classes
    ``reference`` − that variant has a 95 % interval wholly above zero, wholly below, or
    across it."""
    parts = []
    for name, d in table[table["variant"] != reference].groupby("variant", sort=False):
        if d["verdict"].eq("").all():
            continue
        n = {v: int((d["verdict"] == v).sum()) for v in ("holds", "contradicted")}
        parts.append(f"{reference} − {name}: above zero on {n['holds']} of {len(d)} "
                     f"class{'es' if len(d) != 1 else ''}, "
                     f"below on {n['contradicted']}, "
                     f"across zero on {len(d) - n['holds'] - n['contradicted']}")
    return "; ".join(parts) or "no comparison"


# ---- Table I --------------------------------------------------------------------------------
def _table_i_stored(cfg: Config, **kw) -> bool:
    return stored(cfg, ("UniChest", "one source"), kw.get("seeds"))


@replay.recorded_table("table1", _table_i_stored)
def table_i(cfg: Config, *, source: str = "chestxray14", epochs: int = 2, seeds=None,
            n_boot=None, progress: bool = True) -> pd.DataFrame:
    """Table I: test AUC on ``source`` per class and their mean ("mean", first) of UniChest
    (not fine-tuned), the "one source" variant as pre-trained and the same model fine-tuned
    for ``epochs`` epochs on all of ``source``'s training split, and UniChest − the
    fine-tuned one (paired, with the verdict of "UniChest is greater"). Columns row, class,
    n_pos, mean, lo, hi (pooled 95 % interval over seeds and test patients), n_seeds,
    per_seed, verdict, epochs."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    scores = {name: [scored(cfg, name, sd, source, progress=progress) for sd in seeds]
              for name in TABLE_I_ROWS[:2]}
    base = scores["UniChest"][0]
    tuned = []
    for seed in seeds:
        [fit] = transfer_predictions(cfg, "one source", seed, source=source,
                                     protocols=("fine-tune",), portions=(1.0,), epochs=epochs,
                                     progress=progress)[("fine-tune", 1.0)]  # one run at 100 %
        p = fit.probs
        if p.shape != base.probs.shape:
            raise ValueError(f"fine-tuned scores {p.shape} do not match the test split "
                             f"{base.probs.shape} of {source}")
        tuned.append(dataclasses.replace(base, probs=np.asarray(p)))
    scores[FINE_TUNED] = tuned
    cols, table = kept_columns(base, min_pos=MIN_POS[cfg.profile])
    w = patient_weights(base.patients, n_boot, f"{source}/test/{cfg.heterogeneity}")
    info = dict(sources=[source], split="test", seeds=list(seeds), n_boot=n_boot)
    ms = {name: _measures(s, base.classes, cols, w, name, info) for name, s in scores.items()}
    ms[DIFFERENCE] = {c: ms["UniChest"][c] - ms[FINE_TUNED][c] for c in ms["UniChest"]}
    n_pos = table.set_index("class")["n_pos"]
    rows = []
    for name, per in ms.items():
        kind = "difference" if name == DIFFERENCE else "score"
        for cls in ["mean"] + [base.classes[j] for j in cols]:
            rows.append(dict(row=name, **{"class": cls},
                             n_pos=int(n_pos[cls]) if cls in n_pos else -1,
                             **_row(per[cls], kind), epochs=epochs))
    return pd.DataFrame(rows)


#: The names of :func:`table_i_study`'s ``values`` ("n/a" when it did not run).
T1_VALUES = ("t1_unichest", "t1_one_source", "t1_finetuned", "t1_diff", "t1_verdict",
             "t1_epochs", "t1_n_classes", "t1_source", "t1_holds", "t1_contradicted",
             "t1_inconclusive")


def table_i_study(cfg: Config, rows: Sequence[str], *, source: str = "chestxray14",
                  epochs: int = 2, progress: bool = True) -> Study:
    """Table I as chapter 06 shows it: runs when the chapter has the rows "UniChest" and
    "one source" and ``source`` is a pre-training source; ``tables["table1"]`` is
    :func:`table_i`, ``values`` what the chapter's text quotes (``t1_*``: each row's mean
    with its interval, the difference's verdict, the classes on which it holds, is
    contradicted or is inconclusive); otherwise ``note`` says why not."""
    if not {"UniChest", "one source"} <= set(rows) or source not in cfg.sources:
        return Study(False, values=dict.fromkeys(T1_VALUES, "n/a"),
                     note=f"Table I not run: it needs the rows UniChest and one source and "
                          f"{source} among the pre-training sources.")
    try:
        t = table_i(cfg, source=source, epochs=epochs, progress=progress)
    except replay.RecordMissing as e:  # ``recorded`` mode, and neither stored nor recorded
        return Study(False, values=dict.fromkeys(T1_VALUES, "n/a"),
                     note=f"Table I not run: {e}.", status="missing")
    mean = t[t["class"] == "mean"].set_index("row")
    cls = t[(t["row"] == DIFFERENCE) & (t["class"] != "mean")]
    values = {f"t1_{k}": "{:.3f} [{:.3f}, {:.3f}]".format(*mean.loc[r, ["mean", "lo", "hi"]])
              for k, r in (("unichest", "UniChest"), ("one_source", "one source"),
                           ("finetuned", FINE_TUNED))}
    values.update(t1_diff=stats.fmt_interval(*mean.loc[DIFFERENCE, ["mean", "lo", "hi"]]),
                  t1_verdict=mean.loc[DIFFERENCE, "verdict"], t1_epochs=epochs,
                  t1_n_classes=len(cls), t1_source=source,
                  **{f"t1_{v}": int((cls["verdict"] == v).sum())
                     for v in ("holds", "contradicted", "inconclusive")})
    ev = t.attrs.get("evidence")
    return Study(True, {"table1": t}, values, status=ev.status if ev else "live",
                 caption=ev.caption if ev else "")


__all__ = ["DIFFERENCE", "FIGURES", "FIGURE_ROWS", "FINE_TUNED", "PAPER_TABLE_I",
           "T1_VALUES", "TABLE_I_ROWS", "class_measures", "class_table", "figure_views",
           "standing", "table_i", "table_i_study", "view_table"]
