"""The paper's classification metrics (Section IV-C): AUC, F1, ACC and AP per class and their
macro means aAUC, aF1, aACC and mAP.

Following MedKLIP (and the paper), the binary threshold of each class is the score that
maximises that class's F1 on the evaluated set, and ACC is measured at that same threshold.
A class whose evaluated samples hold no positives or no negatives has no AUC: it is reported
as undefined (NaN, ``defined = False``) and left out of the macro means, and the macro row
says how many classes were left out and which — nothing is dropped silently.

Missing labels (``mask`` False: the source does not annotate the class) are excluded per
element, never counted as negatives (paper Section III-C2).

Every curve is computed from one sort per class (no loop over samples), and the numbers
match scikit-learn's ``roc_auc_score``, ``average_precision_score`` and
``precision_recall_curve`` (see ``tests/test_metrics.py``).

Introduced in ``notebooks/02_conquer.ipynb`` (the validation aAUC) and
``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

#: Per-class metric names and the name of their macro mean, as the paper's tables write them.
MACRO_NAMES: dict[str, str] = {"AUC": "aAUC", "F1": "aF1", "ACC": "aACC", "AP": "mAP"}
#: Row label of the macro means in :func:`classification_metrics`.
MACRO = "macro"


def binary_curve_metrics(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """AUC, AP, max-F1 threshold, F1 and ACC of one class from one sort.

    ``y_true`` holds 0/1 and ``y_score`` any real scores (higher = more likely positive), both
    1-D of the same length, missing entries already removed. A sample is predicted positive
    when ``score >= threshold``. Returns NaN for every metric when the class has no positive
    or no negative sample (AUC undefined).
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} entries but y_score has {s.size}")
    n = y.size
    n_pos = float(y.sum())
    n_neg = n - n_pos
    nan = float("nan")
    if n_pos == 0 or n_neg == 0:
        return dict(AUC=nan, F1=nan, ACC=nan, AP=nan, threshold=nan)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # last index of each run of equal scores = one operating point per distinct threshold
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))  # trapezoids (ties: diagonal)
    precision = tp / (tp + fp)
    ap = float(np.sum(np.diff(tpr) * precision))  # step-wise, as scikit-learn's AP
    f1 = 2.0 * tp / (tp + fp + n_pos)  # 2TP / (2TP + FP + FN)
    best = int(np.argmax(f1))
    acc = (tp[best] + (n_neg - fp[best])) / n
    return dict(AUC=auc, F1=float(f1[best]), ACC=float(acc), AP=ap, threshold=float(s[last[best]]))


def _check_inputs(y_true, y_score, mask, classes):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score.reshape(-1, 1)
        mask = None if mask is None else np.asarray(mask).reshape(-1, 1)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must both be "
                         "(n_samples, n_classes) arrays of the same shape")
    if mask is None:
        mask = ~np.isnan(y_true)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != y_true.shape:
            raise ValueError(f"mask has shape {mask.shape}; expected {y_true.shape} like y_true")
        mask = mask & ~np.isnan(y_true)
    observed = np.where(mask, y_true, 0.0)
    if not np.isin(observed, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1 (NaN or mask=False for missing labels)")
    if np.isnan(y_score[mask]).any():
        raise ValueError("y_score holds NaN at observed entries; check the model's outputs")
    n_classes = y_true.shape[1]
    if classes is None:
        classes = [f"class_{j}" for j in range(n_classes)]
    classes = list(classes)
    if len(classes) != n_classes:
        raise ValueError(f"classes has {len(classes)} names but the arrays have {n_classes} columns")
    return y_true, y_score, mask, classes


def classification_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    mask: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-class AUC, F1, ACC, AP at the max-F1 threshold, plus a final macro row.

    ``y_true`` (n, c) of 0/1 (NaN = missing), ``y_score`` (n, c) scores or probabilities,
    ``mask`` (n, c) bool, True where the label is observed (default: ``~isnan(y_true)``).
    One row per class with columns ``class, AUC, F1, ACC, AP, threshold, n, n_pos, defined``
    and a last row ``class == "macro"`` whose AUC/F1/ACC/AP are the means over *defined*
    classes (the paper's aAUC, aF1, aACC, mAP), ``n`` = number of classes averaged and
    ``n_undefined`` / ``undefined`` naming the classes left out. ``df.attrs`` repeats the
    macro numbers by their paper names.
    """
    y_true, y_score, mask, classes = _check_inputs(y_true, y_score, mask, classes)
    rows = []
    for j, name in enumerate(classes):
        m = mask[:, j]
        y, s = y_true[m, j], y_score[m, j]
        r = binary_curve_metrics(y, s)
        n_pos = int(y.sum())
        rows.append(dict(**{"class": name}, **r, n=int(m.sum()), n_pos=n_pos,
                         defined=bool(0 < n_pos < m.sum())))
    df = pd.DataFrame(rows)
    undefined = df.loc[~df["defined"], "class"].tolist()
    means = df.loc[df["defined"], list(MACRO_NAMES)].mean() if df["defined"].any() else None
    macro = {k: (float(means[k]) if means is not None else float("nan")) for k in MACRO_NAMES}
    df["n_undefined"] = 0
    df["undefined"] = ""
    df.loc[len(df)] = dict(**{"class": MACRO}, **macro, threshold=float("nan"),
                           n=int(df["defined"].sum()), n_pos=-1, defined=means is not None,
                           n_undefined=len(undefined), undefined=", ".join(undefined))
    df = df.astype({"n": int, "n_pos": int, "defined": bool, "n_undefined": int})
    df.attrs.update({MACRO_NAMES[k]: v for k, v in macro.items()})
    df.attrs["n_undefined"] = len(undefined)
    return df


def macro_auc(y_true: np.ndarray, y_score: np.ndarray, mask: np.ndarray, classes) -> float:
    """aAUC alone: the mean AUC over observed classes that have both labels (NaN if none);
    the trainer's validation metric."""
    y = np.where(mask, y_true, np.nan)
    return float(classification_metrics(y, y_score, mask, classes).attrs["aAUC"])


def macro_summary(per_class: pd.DataFrame) -> pd.Series:
    """The macro row of :func:`classification_metrics` under the paper's names
    (aAUC, aF1, aACC, mAP) plus how many classes were averaged and left out."""
    row = per_class.loc[per_class["class"] == MACRO].iloc[0]
    out = {MACRO_NAMES[k]: row[k] for k in MACRO_NAMES}
    out.update(n_classes=int(row["n"]), n_undefined=int(row["n_undefined"]))
    return pd.Series(out)


def to_tidy(per_class: pd.DataFrame, **keys) -> pd.DataFrame:
    """Long form of :func:`classification_metrics`: one row per (class, metric) with columns
    ``class, metric, value, defined, n, n_pos`` plus a constant column per ``keys`` item
    (e.g. ``source=..., model=..., seed=...``). Macro rows use the paper's names."""
    long = per_class.melt(id_vars=["class", "defined", "n", "n_pos"], value_vars=list(MACRO_NAMES),
                          var_name="metric", value_name="value")
    is_macro = long["class"] == MACRO
    long.loc[is_macro, "metric"] = long.loc[is_macro, "metric"].map(MACRO_NAMES)
    for k, v in keys.items():
        long[k] = v
    return long


def by_class(tidy: pd.DataFrame) -> pd.DataFrame:
    """A tidy result table (columns ``class``, ``metric``, ``value``) as classes x metrics,
    the :data:`MACRO` row last (not sorted in among the class names)."""
    table = tidy.pivot_table(index="class", columns="metric", values="value")
    order = [c for c in table.index if c != MACRO] + [c for c in table.index if c == MACRO]
    return table.loc[order]


__all__ = ["MACRO", "MACRO_NAMES", "binary_curve_metrics", "by_class", "classification_metrics",
           "macro_auc", "macro_summary", "to_tidy"]
