"""Routes to grounding that points: UniChest trained at finer attention grids
(``cfg.output_stride`` 16 and 8 against the paper's 32), each over the profile's seeds, with
what it costs and what it does to classification.

For each output stride, the whole method is trained again (Conquer, then Divide) and scored:

- the pointing game on the grounding source's **validation** lesions (mean over seeds), the
  only number the choice of a stride reads: :func:`choose_stride` takes the best, and the
  paper's 32 unless another beats it;
- on the **test** lesions, the pointing game and Dice with their 95 % intervals, and the
  pointing game against the strongest image-blind baseline per class
  (:func:`.grounding_measures.strongest_baseline`), as chapter 04's table at stride 32;
- the mean in-domain test aAUC, so that a stride that points better but classifies worse is
  seen to;
- the cost: the mean wall time of one Conquer training epoch over the seeds (the runs'
  histories, this machine, steps only), and its ratio to stride 32.

A finer stride costs a Conquer and a Divide run per seed beyond the book's own, so chapter 04
runs the study with the full ledger or shows it from the record (:func:`stride_study`).

The route that needs no training (:func:`head_table`): read the grounding map from **one**
attention head, the one with the best pointing game on the validation lesions, instead of the
mean over every head, layer and network that Eq. 5 mixes; scored on the test lesions against
the mixed map and the strongest baseline, paired by patient. Chapter 04's diagnosis found
single heads that lean on the lesion while the mean washes them out; this asks whether
choosing one on validation carries over to test.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from . import replay
from ..evaluation import metrics
from ..evaluation.attention_diagnosis import head_split_scores
from ..evaluation.grounding_references import at_threshold, choose_threshold
from .grounding_measures import (METRICS, MODEL_NAME, class_replicates,
                                 grounding_baseline_measures, grounding_baseline_table,
                                 strongest_baseline, summary_row)
from .ledger import HOW_TO_RUN, study_on
from .measures import Measure, Study, in_domain_measure, patient_weights
from .variants import SEEDS, stored, variant_config, variant_history, variant_model

#: Output strides compared, per profile (the smoke world trains the cheaper pair only).
STRIDES = {"smoke": (32, 16), "tutorial": (32, 16, 8), "paper": (32, 16, 8)}
COLUMNS = ("stride", "grid", "val_pointing", "pointing", "pointing_lo", "pointing_hi", "dice",
           "dice_lo", "dice_hi", "vs_strongest", "vs_lo", "vs_hi", "verdict", "aauc", "aauc_lo",
           "aauc_hi", "epoch_seconds", "cost_ratio", "n_seeds", "chosen")


def stride_config(cfg: Config, stride: int) -> Config:
    """``cfg`` with the image encoder's output stride ``stride``."""
    return cfg.replace(output_stride=int(stride))


def _strides_stored(cfg: Config, *, strides: Sequence[int] | None = None, **kw) -> bool:
    strides = STRIDES[cfg.profile] if strides is None else strides
    return all(stored(stride_config(cfg, s), ("UniChest", "Conquer only")) for s in strides)


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else np.nan


def _epoch_seconds(c: Config, seeds, progress: bool) -> float:
    """Mean wall time of one Conquer training epoch over the seeds' histories."""
    out = []
    for seed in seeds:
        h = variant_history(c, "Conquer only", seed, progress=progress)
        if "train_seconds" in h:
            out.append(float(h["train_seconds"].dropna().mean()))
    return float(np.mean(out)) if out else np.nan


def choose_stride(table: pd.DataFrame) -> int:
    """The stride with the best validation pointing game; on a tie the cheapest (the largest
    stride, the paper's 32 when it is tied), and 32 when no stride has a validation number."""
    valid = table.dropna(subset=["val_pointing"])
    if valid.empty:
        return 32
    best = valid["val_pointing"].max()
    tied = valid[np.isclose(valid["val_pointing"], best)]["stride"].astype(int).tolist()
    return 32 if 32 in tied else max(tied)


@replay.recorded_table("grounding-strides", _strides_stored)
def stride_table(cfg: Config, *, strides: Sequence[int] | None = None,
                 source: str = "chestxdet10", progress: bool = True) -> pd.DataFrame:
    """One row per output stride (columns :data:`COLUMNS`): validation pointing game, test
    pointing game, Dice and the difference from the strongest baseline with 95 % intervals
    over seeds and test patients, mean in-domain test aAUC, the Conquer epoch's wall time and
    its ratio to the first stride; ``chosen`` marks :func:`choose_stride`'s pick."""
    strides = tuple(STRIDES[cfg.profile] if strides is None else strides)
    seeds = SEEDS[cfg.profile]
    rows = []
    for s in strides:
        c = stride_config(cfg, s)
        ms, info = grounding_baseline_measures(c, source, progress=progress)
        diffs, _ = strongest_baseline(ms, info, "pointing game")
        pg = ms["UniChest", "pointing game", "macro"].summary()
        dice = ms["UniChest", "Dice", "macro"].summary()
        vs = diffs["macro"].summary()
        a = in_domain_measure(c, "UniChest", progress=progress).summary()
        rows.append(dict(stride=s, grid=f"{c.image_size // s} × {c.image_size // s}",
                         val_pointing=_nanmean(info["valid_pointing"]),
                         pointing=pg["mean"], pointing_lo=pg["lo"], pointing_hi=pg["hi"],
                         dice=dice["mean"], dice_lo=dice["lo"], dice_hi=dice["hi"],
                         vs_strongest=vs["mean"], vs_lo=vs["lo"], vs_hi=vs["hi"],
                         verdict=vs["verdict"], aauc=a["mean"], aauc_lo=a["lo"],
                         aauc_hi=a["hi"], epoch_seconds=_epoch_seconds(c, seeds, progress),
                         n_seeds=len(seeds)))
    out = pd.DataFrame(rows)
    out["cost_ratio"] = out["epoch_seconds"] / out["epoch_seconds"].iloc[0]
    out["chosen"] = out["stride"] == choose_stride(out)
    return out[list(COLUMNS)]


def strides_on(cfg: Config, full: bool | None = None, *, source: str = "chestxdet10",
               strides: Sequence[int] | None = None) -> bool:
    """Whether chapter 04 shows the study: the full ledger when asked or when the profile runs
    it; otherwise only when it needs no training (stored or recorded)."""
    return study_on(cfg, full, lambda: stride_table.available(
        cfg, strides=_strides(cfg, strides), source=source))


def _strides(cfg: Config, strides: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(int(s) for s in (STRIDES[cfg.profile] if strides is None else strides))


def stride_study(cfg: Config, *, full: bool | None = None, source: str = "chestxdet10",
                 strides: Sequence[int] | None = None, progress: bool = True) -> Study:
    """The study as chapter 04 shows it: :func:`stride_table` of ``strides`` (default: the
    profile's :data:`STRIDES`; an empty list skips the study) under ``tables["strides"]``
    (with where its numbers come from) when :func:`strides_on`, else ``note`` says how to run
    it; ``values["chosen"]`` is the chosen stride and, when it is not ``cfg``'s,
    ``tables["chosen"]`` chapter 04's per-class grounding table at that stride
    (:func:`.grounding_measures.grounding_baseline_table`)."""
    strides = _strides(cfg, strides)
    if not strides:
        return Study(False, note="Not run: no output stride was asked for (grounding_strides).")
    if not strides_on(cfg, full, source=source, strides=strides):
        return Study(False, note="Not in this build: training UniChest again at output strides "
                                 f"{', '.join(map(str, strides[1:]))} (a Conquer and a Divide "
                                 f"run per stride and seed). {HOW_TO_RUN}.")
    t = stride_table(cfg, strides=strides, source=source, progress=progress)
    ev = t.attrs.get("evidence")
    chosen = int(t.loc[t["chosen"], "stride"].iloc[0])
    tabs = {"strides": t}
    at = stride_config(cfg, chosen)  # chapter 04's per-class table at the chosen stride,
    if chosen != cfg.output_stride and (full or grounding_baseline_table.available(
            at, source=source)):  # when asked for, or readable without training
        tabs["chosen"] = grounding_baseline_table(at, source=source, progress=progress)
    return Study(True, tabs, {"chosen": chosen}, status=getattr(ev, "status", "live"),
                 caption=getattr(ev, "caption", ""))


# ---- one head instead of the mix: the route that needs no training --------------------------
#: The methods of :func:`head_table`: UniChest's mixed map (the paper's) and the single head
#: of UniChest chosen on the validation lesions (per seed).
MIXED, HEAD = "mixed map", "chosen head"
HEAD_COLUMNS = ("class", "metric", "method", "kind", "n", "mean", "lo", "hi", "n_seeds",
                "per_seed", "against", "verdict", "heads")


def choose_head(lesions: pd.DataFrame, heads: dict) -> tuple[tuple[int, int, int], float]:
    """The (network, layer, head) whose map has the best macro pointing game (mean over the
    classes present) on ``lesions`` (the validation split's), and that score; on a tie the
    first in (network, layer, head) order."""
    cls = lesions["class"].to_numpy()
    score = {k: float(pd.Series(v["hit"]).groupby(cls).mean().mean()) for k, v in heads.items()}
    best = max(sorted(score), key=lambda k: (score[k], [-x for x in k]))
    return best, score[best]


def head_label(key: tuple[int, int, int]) -> str:
    """"QN1 layer 1 head 2" (network 1 is QN1, network e > 1 is expert e - 1; 1-based)."""
    net = "QN1" if key[0] == 1 else f"expert {key[0] - 1}"
    return f"{net} layer {key[1] + 1} head {key[2] + 1}"


def _head_stored(cfg: Config, **kw) -> bool:
    return stored(cfg, ["UniChest"])


@replay.recorded_table("grounding-head", _head_stored)
def head_table(cfg: Config, *, source: str = "chestxdet10", progress: bool = True
               ) -> pd.DataFrame:
    """Grounding read from one attention head instead of the mix of every head, layer and
    network (columns :data:`HEAD_COLUMNS`). Per seed, the head with the best validation
    pointing game (:func:`choose_head`) and its Dice threshold (validation) are chosen; on the
    test lesions, per class and macro: pointing game and Dice of the mixed map and of that
    head (``kind`` "score"), and differences with their verdicts (``kind`` "difference"): the
    head − the mixed map, and the head − the strongest baseline of each class (as chapter
    04's table picks it). All on the patient resamples of chapter 04's grounding table, so
    every difference is paired. ``heads`` names each seed's head and its validation score."""
    ms, info = grounding_baseline_measures(cfg, source, progress=progress)
    order, kept = info["classes"], [c not in info["flagged"] for c in info["classes"]]
    parts, chosen, w = {m: [] for m in METRICS}, [], None
    for seed in info["seeds"]:
        c = variant_config(cfg, MODEL_NAME, seed)
        model = variant_model(cfg, MODEL_NAME, seed, progress=progress)
        v_les, v_heads = head_split_scores(model, c, source, "valid", dice=False)
        key, v_score = choose_head(v_les, v_heads)
        chosen.append(f"seed {seed}: {head_label(key)} (validation {v_score:.2f})")
        _, v_head = head_split_scores(model, c, source, "valid", only=[key])
        th = choose_threshold(v_head[key]["dice"])
        t_les, t_heads = head_split_scores(model, c, source, "test", only=[key])
        if w is None:  # the resamples of grounding_baseline_measures (same lesions, same tag)
            w = patient_weights(t_les["patient"].to_numpy(), info["n_boot"], f"ground/{source}")
        cls = t_les["class"].to_numpy()
        vals = {"pointing game": t_heads[key]["hit"],
                "Dice": at_threshold(t_heads[key]["dice"], th)}
        for m in METRICS:
            parts[m].append(class_replicates(vals[m], cls, order, w, kept))
    head = {}
    for m in METRICS:
        points = np.stack([p for p, _ in parts[m]])
        reps = np.stack([r for _, r in parts[m]])
        for k, c in enumerate(order + [metrics.MACRO]):
            head[MODEL_NAME, m, c] = Measure(points[:, k], reps[:, k], dict(class_=c))
    swapped = {**ms, **head}  # the head in UniChest's place, for the strongest-baseline rule
    rows = []
    for m in METRICS:
        diffs, best = strongest_baseline(swapped, info, m)
        for c in order + [metrics.MACRO]:
            against = best.get(c, "per class")
            for method, meas, kind, vs in (
                    (MIXED, ms[MODEL_NAME, m, c], "score", ""),
                    (HEAD, head[MODEL_NAME, m, c], "score", ""),
                    (f"{HEAD} − {MIXED}", head[MODEL_NAME, m, c] - ms[MODEL_NAME, m, c],
                     "difference", MIXED),
                    (f"{HEAD} − strongest baseline", diffs[c], "difference", against)):
                rows.append(dict(summary_row(meas, c, m, method, kind, info, "", vs),
                                 heads="; ".join(chosen)))
    return pd.DataFrame(rows, columns=list(HEAD_COLUMNS))


def head_study(cfg: Config, *, full: bool | None = None, source: str = "chestxdet10",
               progress: bool = True) -> Study:
    """:func:`head_table` as chapter 04 shows it (``tables["head"]``, with where its numbers
    come from) when UniChest of every seed is stored or the table recorded (or with the full
    ledger: it needs every seed's model, and a default build trains one); ``values`` holds the
    macro rows (mean, lo, hi) of every method, keyed "metric|method"."""
    if not study_on(cfg, full, lambda: head_table.available(cfg, source=source)):
        return Study(False, note="Not in this build: it reads UniChest of every seed, and this "
                                 f"build trained one. {HOW_TO_RUN}.")
    t = head_table(cfg, source=source, progress=progress)
    ev = t.attrs.get("evidence")
    macro = t[t["class"] == metrics.MACRO].set_index(["metric", "method"])
    values = {f"{m}|{meth}": tuple(float(macro.loc[(m, meth), k]) for k in ("mean", "lo", "hi"))
              for m, meth in macro.index}
    return Study(True, {"head": t}, values, status=getattr(ev, "status", "live"),
                 caption=getattr(ev, "caption", ""))


__all__ = ["COLUMNS", "HEAD", "HEAD_COLUMNS", "MIXED", "STRIDES", "choose_head", "choose_stride",
           "head_label", "head_study", "head_table", "stride_config", "stride_study",
           "stride_table", "strides_on"]
