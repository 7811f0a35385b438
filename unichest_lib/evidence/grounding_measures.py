"""UniChest's grounding against the three baselines of
:mod:`unichest_lib.evaluation.grounding_references`, per class, over seeds and patients.

For every seed of the profile, UniChest's heatmaps are scored on the test lesions of the
grounding source: the pointing game, and Dice at the threshold chosen on the *validation*
lesions (one per method and seed, :func:`~unichest_lib.evaluation.grounding_references.
choose_threshold`). The baselines (random peak, lung centre, mean training mask) do not
depend on the seed: each is one run (``n_seeds`` 1), its interval counts the test sampling
only, and it is subtracted from every seed of UniChest alike. Every method, class and seed
is resampled with **the same patient weights** (:func:`.measures.patient_weights`, one draw
over all test lesions), so UniChest − baseline is a paired difference; intervals are
:class:`.measures.Measure` summaries (:func:`unichest_lib.evaluation.stats.pooled_interval`:
seeds and patients).

Each class is also held against its **strongest** baseline (:func:`strongest_baseline`): the
baseline with the highest mean score on that class's test lesions, so the comparison is
against the best any of the three did on the very lesions scored; a choice that favours the
baselines and makes a "UniChest is better" verdict harder, never easier. The macro difference
averages the per-class differences over the kept classes (each class against its own best).

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluation import metrics, stats
from ..evaluation.grounding_references import (BASELINES, MODEL, at_threshold, choose_threshold,
                                              fit_baselines, split_scores)
from . import replay
from .measures import MIN_POS, N_BOOT, Measure, patient_weights
from .variants import SEEDS, refuse_untrained, stored, variant_config, variant_model

#: The two scores of the table, and the name of the model in it.
METRICS = ("pointing game", "Dice")
MODEL_NAME = "UniChest"
#: The method name of a class's best baseline in :func:`grounding_baseline_table`.
STRONGEST = "strongest baseline"
COLUMNS = ("class", "metric", "method", "kind", "n", "n_train", "flagged", "mean", "lo", "hi",
           "n_seeds", "per_seed", "threshold", "against", "verdict")


def class_replicates(values: np.ndarray, classes: np.ndarray, order, weights: np.ndarray,
                     kept=None) -> tuple[np.ndarray, np.ndarray]:
    """Per class of ``order`` and their macro mean (last): the mean of ``values`` (N,) over
    the lesions of that class (points, (k + 1,)), and the same under each row of patient
    ``weights`` (B, N) (replicates, (k + 1, B); NaN where a resample has no such lesion). The
    macro mean is over the classes with ``kept`` True (all by default); its replicate is the
    mean over those a resample has."""
    values = np.asarray(values, dtype=np.float64)
    kept = np.ones(len(order), bool) if kept is None else np.asarray(kept, bool)
    points = np.zeros(len(order) + 1)
    reps = np.zeros((len(order) + 1, weights.shape[0]))
    for k, cls in enumerate(order):
        sel = classes == cls
        points[k] = values[sel].mean()
        tot = weights[:, sel].sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[k] = np.where(tot > 0, weights[:, sel] @ values[sel] / tot, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no kept class, or none in a resample
        points[-1] = np.mean(points[:-1][kept]) if kept.any() else np.nan
        reps[-1] = np.nanmean(reps[:-1][kept], axis=0) if kept.any() else np.nan
    return points, reps


def grounding_baseline_measures(cfg: Config, source: str = "chestxdet10", *, seeds=None,
                                n_boot=None, progress: bool = True) -> tuple[dict, dict]:
    """{(method, metric, class): :class:`.measures.Measure`} over the profile's seeds for
    UniChest and each baseline, and what they were computed on (classes, lesions per class,
    ``flagged`` classes, thresholds per method). A class with fewer than
    :data:`.measures.MIN_POS` test lesions is flagged and left out of the ``"macro"`` mean
    (as the AUC measures leave out classes with too few positives)."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    refuse_untrained(cfg, MODEL_NAME, seeds)  # before the baselines' minute of scoring
    base = fit_baselines(cfg, source)
    valid, test = (split_scores(cfg, source, s, baselines=base) for s in ("valid", "test"))
    lesions = test.lesions
    if lesions.empty:
        raise ValueError(f"the test split of {source!r} has no lesion mask to score grounding on")
    order = [c for c in base.classes if (lesions["class"] == c).any()]
    n = lesions["class"].value_counts()
    kept = [int(n[c]) >= MIN_POS[cfg.profile] for c in order]
    cls = lesions["class"].to_numpy()
    w = patient_weights(lesions["patient"].to_numpy(), n_boot, f"ground/{source}")

    def scored(valid_s, test_s):  # {metric: per-lesion test values}, validation threshold
        th = choose_threshold(valid_s["dice"])
        return {"pointing game": test_s["hit"], "Dice": at_threshold(test_s["dice"], th)}, th

    runs = {name: [scored(valid.scores[name], test.scores[name])] for name in BASELINES}
    runs[MODEL_NAME] = []
    valid_pointing = []  # UniChest's macro pointing game on the validation lesions, per seed
    for seed in seeds:
        c = variant_config(cfg, MODEL_NAME, seed)
        model = variant_model(cfg, MODEL_NAME, seed, progress=progress)
        v, t = (split_scores(c, source, s, model=model) for s in ("valid", "test"))
        if not t.lesions[["class", "row"]].equals(lesions[["class", "row"]]):
            raise RuntimeError(f"seed {seed} sees other {source!r} test lesions than the "
                               "baselines; the world must not depend on the training seed")
        runs[MODEL_NAME].append(scored(v.scores[MODEL], t.scores[MODEL]))
        hits = pd.Series(v.scores[MODEL]["hit"], dtype=float).groupby(
            v.lesions["class"].to_numpy()).mean()  # macro over the classes validation has
        valid_pointing.append(float(hits.mean()) if len(hits) else np.nan)
    out = {}
    for name, per_seed in runs.items():
        for metric in METRICS:
            parts = [class_replicates(vals[metric], cls, order, w, kept) for vals, _ in per_seed]
            points = np.stack([p for p, _ in parts])  # (n_seeds, k + 1)
            reps = np.stack([r for _, r in parts])  # (n_seeds, k + 1, B)
            for k, c in enumerate(order + [metrics.MACRO]):
                out[name, metric, c] = Measure(points[:, k], reps[:, k], dict(
                    what=f"{name} {metric}", class_=c, sources=[source], seeds=list(seeds)))
    info = dict(classes=order, flagged=[c for c, k in zip(order, kept) if not k],
                n={**{c: int(n[c]) for c in order},
                   metrics.MACRO: int(sum(n[c] for c, k in zip(order, kept) if k))},
                n_train={**{c: int(v) for c, v in zip(base.classes, base.n_train)},
                         metrics.MACRO: int(base.n_train.sum())},
                thresholds={name: [th for _, th in per_seed] for name, per_seed in runs.items()},
                valid_pointing=valid_pointing,
                centres=base.centres, seeds=list(seeds), n_boot=n_boot, source=source)
    return out, info


def strongest_baseline(ms: dict, info: dict, metric: str) -> tuple[dict, dict]:
    """UniChest − its strongest baseline on ``metric``, per class and macro: ({class or
    "macro": :class:`.measures.Measure`}, {class: the baseline chosen}). A class's strongest
    baseline has the highest mean ``metric`` over that class's test lesions; the macro
    difference is the mean over the kept (unflagged) classes of the per-class differences, on
    the same patient resamples."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    best = {c: max(BASELINES, key=lambda b: (float(np.mean(ms[b, metric, c].points)),
                                             -BASELINES.index(b)))
            for c in info["classes"]}
    diffs = {c: ms[MODEL_NAME, metric, c] - ms[best[c], metric, c] for c in info["classes"]}
    kept = [c for c in info["classes"] if c not in info["flagged"]]
    if kept:
        points = np.mean([diffs[c].points for c in kept], axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class missing from a resample
            reps = np.nanmean([diffs[c].reps for c in kept], axis=0)
    else:
        shape = ms[MODEL_NAME, metric, metrics.MACRO]
        points, reps = np.full_like(shape.points, np.nan), np.full_like(shape.reps, np.nan)
    macro = Measure(points, reps, dict(what=f"{MODEL_NAME} {metric} - strongest baseline",
                                       sources=[info["source"]], seeds=info["seeds"]))
    return {**diffs, metrics.MACRO: macro}, best


def grounding_baseline_table(cfg: Config, source: str = "chestxdet10", *, seeds=None,
                             n_boot=None, progress: bool = True) -> pd.DataFrame:
    """Pointing game and Dice per class (and their macro mean) of UniChest and each baseline
    (``kind == "score"``), and UniChest − baseline (``kind == "difference"``, paired, with the
    verdict of "UniChest is better"): mean over seeds, 95 % interval over seeds and patients
    (:meth:`.measures.Measure.summary`, a normal interval, clipped to the score's range:
    [0, 1], or [-1, 1] for a difference), the lesions scored (``n``), the training masks
    behind the mean mask (``n_train``) and each seed's Dice threshold chosen on validation.
    A ``flagged`` class (too few test lesions) has its mean but no interval and no macro
    share. Each class and metric also has the row ``UniChest − strongest baseline``
    (:func:`strongest_baseline`; ``against`` names the baseline, "per class" on the macro
    row)."""
    ms, info = grounding_baseline_measures(cfg, source, seeds=seeds, n_boot=n_boot,
                                           progress=progress)
    strongest = {m: strongest_baseline(ms, info, m) for m in METRICS}
    rows = []
    fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
    for cls in info["classes"] + [metrics.MACRO]:
        for metric in METRICS:
            model = ms[MODEL_NAME, metric, cls]
            for name in (MODEL_NAME,) + BASELINES:
                m = ms[name, metric, cls]
                rows.append(summary_row(m, cls, metric, name, "score", info,
                                        fmt(info["thresholds"][name]) if metric == "Dice" else ""))
            for name in BASELINES:
                rows.append(summary_row(model - ms[name, metric, cls], cls, metric,
                                        f"{MODEL_NAME} − {name}", "difference", info, "", name))
            diffs, best = strongest[metric]
            rows.append(summary_row(diffs[cls], cls, metric, f"{MODEL_NAME} − {STRONGEST}",
                                    "difference", info, "", best.get(cls, "per class")))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summary_row(m: Measure, cls: str, metric: str, method: str, kind: str, info: dict,
                threshold: str, against: str = "") -> dict:
    """One row of a grounding table (:data:`COLUMNS`): ``m`` summarised, its interval
    clipped to the metric's range; a flagged class gets no interval, so its difference reads
    inconclusive."""
    s = m.summary()
    flagged = cls in info["flagged"]
    if flagged:  # too few lesions for a bootstrap to mean anything: no interval, inconclusive
        s.update(lo=np.nan, hi=np.nan, verdict=stats.verdict(np.nan, np.nan))
    low = 0.0 if kind == "score" else -1.0  # a normal interval may spill over the range
    return {"class": cls, "metric": metric, "method": method, "kind": kind,
            "n": info["n"][cls], "n_train": info["n_train"].get(cls, 0), "flagged": flagged,
            "mean": s["mean"],
            "lo": max(s["lo"], low), "hi": min(s["hi"], 1.0), "n_seeds": s["n_seeds"],
            "per_seed": ", ".join(f"{v:.3f}" for v in m.points), "threshold": threshold,
            "against": against, "verdict": s["verdict"] if kind == "difference" else ""}


def _grounding_stored(cfg: Config, **kw) -> bool:
    return stored(cfg, ["UniChest"], kw.get("seeds"))


grounding_baseline_table = replay.recorded_table("grounding-baselines", _grounding_stored)(
    grounding_baseline_table)


__all__ = ["COLUMNS", "METRICS", "MODEL_NAME", "STRONGEST", "class_replicates",
           "grounding_baseline_measures", "grounding_baseline_table", "strongest_baseline", "summary_row"]
