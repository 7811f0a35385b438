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

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from . import replay
from .grounding_measures import grounding_baseline_measures, strongest_baseline
from .ledger import HOW_TO_RUN, study_on
from .measures import Study, in_domain_measure
from .variants import SEEDS, stored, variant_history

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
    it; ``values["chosen"]`` is the chosen stride."""
    strides = _strides(cfg, strides)
    if not strides:
        return Study(False, note="Not run: no output stride was asked for (grounding_strides).")
    if not strides_on(cfg, full, source=source, strides=strides):
        return Study(False, note="Not in this build: training UniChest again at output strides "
                                 f"{', '.join(map(str, strides[1:]))} (a Conquer and a Divide "
                                 f"run per stride and seed). {HOW_TO_RUN}.")
    t = stride_table(cfg, strides=strides, source=source, progress=progress)
    ev = t.attrs.get("evidence")
    return Study(True, {"strides": t}, {"chosen": int(t.loc[t["chosen"], "stride"].iloc[0])},
                 status=getattr(ev, "status", "live"), caption=getattr(ev, "caption", ""))


__all__ = ["COLUMNS", "STRIDES", "choose_stride", "stride_config", "stride_study",
           "stride_table", "strides_on"]
