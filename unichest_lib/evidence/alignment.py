"""Does the image–text alignment learn? (issue #15): for each way of scaling the logits of
L_BCL (Eq. 3, ``cfg.bcl_variant``), Conquer is trained over seeds and measured twice:

* **L_BCL at the end of training**, the mean over the optimiser steps of the last epoch (read
  from the stored training history, nothing is re-run), next to its chance value: the loss of
  logits that carry no information, 2 ln M for a batch of M pairs with the two directions
  summed (the paper's form), ln M with them averaged (the official code's);
* **zero-shot AUC on unseen classes**, what the claim ``zero_shot_unseen`` measures (the
  downstream sources' classes no pre-training source labels, queried by name), with its
  95 % interval over seeds and test patients, and its paired difference from the paper's τ.

The three settings: ``"paper"`` (L2-normalised features, τ = ``cfg.tau_bcl``), ``"code"``
(un-normalised features times log(1/0.07)) and ``"learnable"`` (CLIP's learned 1/τ ≤ 100).
Each costs a Conquer run per seed beyond the chapter's own, so the book runs it with the full
ledger (:func:`alignment_on`). :func:`alignment_table` measures the settings;
:func:`alignment_study` is what the chapter shows: that table, the rule of the chapter applied
to it, or a note when the build left the study out.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluation import stats
from ..evaluation.stats import fmt_interval
from ..training import checkpoints
from ..training.losses import BCL_VARIANTS, CODE_BCL_SCALE, bcl_chance, learned_scale
from . import replay
from .claims import zero_shot_sources
from .ledger import HOW_TO_RUN, study_on
from .measures import ALPHA, Study, macro_measure
from .variants import SEEDS, stored, variant_checkpoint, variant_history

#: The settings compared, in the order the chapter shows them (``cfg.bcl_variant`` values).
BCL_SETTINGS = BCL_VARIANTS
#: The paper's τ "cripples" the alignment when its last-epoch L_BCL is at least this share of
#: its chance value *and* another setting's zero-shot AUC is higher, its interval above 0.
NEAR_CHANCE = 0.9


def setting_config(cfg: Config, setting: str) -> Config:
    """``cfg`` with L_BCL scaled as ``setting``; τ = ``cfg.tau_bcl`` is kept for ``"paper"``
    and is 1 (unused) for the two settings that bring their own scale."""
    return cfg.replace(bcl_variant=setting, tau_bcl=cfg.tau_bcl if setting == "paper" else 1.0)


def alignment_on(cfg: Config, full: bool | None = None) -> bool:
    """Whether chapter 02 runs the study: :func:`~.ledger.full_ledger` when ``full`` is given,
    the environment switch is set or the profile runs the full ledger; otherwise only when it
    needs no training: every Conquer run of the study is stored, or the study is recorded."""
    return study_on(cfg, full, lambda: alignment_table.available(cfg))


def _alignment_stored(cfg: Config, settings: Sequence[str] = BCL_SETTINGS, **kw) -> bool:
    return all(stored(setting_config(cfg, s), ("Conquer only",), kw.get("seeds"))
               for s in settings if s in BCL_SETTINGS)  # alignment_table rejects the others


def final_bcl(hist: pd.DataFrame) -> float:
    """Mean ``bcl_loss`` over the training steps of the last epoch of a training history."""
    train = hist[hist["split"] == "train"] if "split" in hist else hist.iloc[:0]
    if train.empty or "bcl_loss" not in train:
        raise ValueError("the training history has no training steps with a bcl_loss column")
    return float(train.loc[train["epoch"] == train["epoch"].max(), "bcl_loss"].mean())


def logit_scale(cfg: Config, path) -> float:
    """The factor 1/τ on L_BCL's logits of the checkpoint at ``path`` trained with ``cfg``:
    1/``tau_bcl`` (paper), log(1/0.07) on un-normalised features (code), or exp(min(s, log 100))
    of its learned parameter s (learnable)."""
    if cfg.bcl_variant == "paper":
        return 1.0 / cfg.tau_bcl
    if cfg.bcl_variant == "code":
        return CODE_BCL_SCALE
    tensors, _ = checkpoints.read_tensors(path)
    state = checkpoints.model_state(tensors)
    if "bcl_logit_scale" not in state:
        raise checkpoints.CheckpointError(f"checkpoint {path} has no bcl_logit_scale tensor")
    return float(learned_scale(state["bcl_logit_scale"]))


@replay.recorded_table("alignment", _alignment_stored)
def alignment_table(cfg: Config, settings: Sequence[str] = BCL_SETTINGS, *,
                    variant: str = "Conquer only", seeds=None, n_boot=None,
                    progress: bool = True) -> pd.DataFrame:
    """One row per setting of L_BCL, each trained (through the store) for every seed.

    Columns: ``setting``; ``bcl_final`` (seed mean of :func:`final_bcl`) with ``bcl_lo`` /
    ``bcl_hi`` (t-interval over seeds) and ``bcl_per_seed``; ``bcl_chance``
    (:func:`~unichest_lib.training.losses.bcl_chance` for ``cfg.batch_size``); ``scale``
    (mean :func:`logit_scale` of the stored checkpoints); ``zero_shot`` (mean AUC on unseen
    classes, ``variant``'s model) with ``zs_lo`` / ``zs_hi``; ``vs_paper`` with ``vs_lo`` /
    ``vs_hi`` (that AUC minus the paper setting's, paired by seed and test resample; NaN
    when ``"paper"`` is not among ``settings``); ``n_seeds``.
    """
    bad = [s for s in settings if s not in BCL_SETTINGS]
    if bad or not settings:
        raise ValueError(f"settings {list(settings)} must be a non-empty list of {BCL_SETTINGS}")
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    sources = zero_shot_sources(cfg)
    if not sources:
        raise ValueError(f"no downstream source of {list(cfg.downstream)} has classes the "
                         "pre-training sources leave unlabelled: nothing to score zero-shot")
    kw = dict(seeds=seeds, n_boot=n_boot, progress=progress)
    measures, rows = {}, []
    for s in settings:
        c = setting_config(cfg, s)
        bcl = np.array([final_bcl(variant_history(c, "Conquer only", sd, progress=progress))
                        for sd in seeds])
        scale = np.mean([logit_scale(c, variant_checkpoint(c, "Conquer only", sd,
                                                           progress=progress))
                         for sd in seeds])
        measures[s] = macro_measure(c, variant, sources, seen=False, **kw)
        b, z = stats.seed_interval(bcl, ALPHA), measures[s].summary()
        rows.append(dict(setting=s, bcl_final=b["mean"], bcl_lo=b["lo"], bcl_hi=b["hi"],
                         bcl_chance=bcl_chance(s, c.batch_size),
                         bcl_per_seed=", ".join(f"{v:.3f}" for v in bcl), scale=float(scale),
                         zero_shot=z["mean"], zs_lo=z["lo"], zs_hi=z["hi"]))
    for row in rows:
        d = ((measures[row["setting"]] - measures["paper"]).summary() if "paper" in measures
             else dict(mean=np.nan, lo=np.nan, hi=np.nan))
        row.update(vs_paper=d["mean"], vs_lo=d["lo"], vs_hi=d["hi"], n_seeds=len(seeds))
    return pd.DataFrame(rows)


def alignment_rule(table: pd.DataFrame | None) -> dict:
    """The rule of chapter 02 applied to an :func:`alignment_table`, as numbers the
    chapter glues into its sentences: ``share`` (the paper's final L_BCL over its chance
    value), ``near_chance`` (share >= :data:`NEAR_CHANCE`), ``better`` (the setting whose
    zero-shot AUC beats the paper's by most with a paired interval above 0, or ``""``),
    ``better_ci`` (that difference and its interval) and ``switch`` (both hold: the paper's
    τ cripples the alignment and ``better`` would be the better default). ``table=None`` (the
    study was not run) gives the values that say nothing was measured."""
    if table is None:
        return dict(share=float("nan"), near_chance=False, better="", better_ci="n/a",
                    switch=False)
    rows = table.set_index("setting")
    if "paper" not in rows.index:
        raise ValueError("the alignment table has no 'paper' row to compare the others with")
    share = float(rows.loc["paper", "bcl_final"] / rows.loc["paper", "bcl_chance"])
    winners = rows[(rows.index != "paper") & (rows["vs_lo"] > 0)]
    better = str(winners["vs_paper"].idxmax()) if len(winners) else ""
    ci = (fmt_interval(*(float(winners.loc[better, c]) for c in ("vs_paper", "vs_lo", "vs_hi")))
          if better else "n/a")
    near = share >= NEAR_CHANCE
    return dict(share=share, near_chance=near, better=better, better_ci=ci,
                switch=bool(near and better))


def alignment_study(cfg: Config, *, full: bool | None = None, progress: bool = True) -> Study:
    """The study as chapter 02 shows it: when :func:`alignment_on` (``full`` as there), the
    :func:`alignment_table` of every setting under ``tables["alignment"]``; ``values`` is
    :func:`alignment_rule` of that table (of None when the study did not run), and ``note``
    says how to run a study this build left out."""
    if not alignment_on(cfg, full):
        note = ("This build did not run the alignment study (two more Conquer runs per seed): "
                f"{HOW_TO_RUN}, or -p full_ledger True.")
        return Study(False, values=alignment_rule(None), note=note)
    table = alignment_table(cfg, progress=progress)
    return Study(True, {"alignment": table}, alignment_rule(table))


__all__ = ["BCL_SETTINGS", "NEAR_CHANCE", "alignment_on", "alignment_rule", "alignment_study",
           "alignment_table", "final_bcl", "logit_scale", "setting_config"]
