"""The named training runs the book compares: UniChest and its matched controls.

A **variant** (:data:`VARIANTS`) is a store stage plus overrides of the chapter's
configuration: UniChest itself, the Conquer checkpoint Divide starts from, Conquer continued
for as many steps as Divide adds (compute-matched), Divide with K = 1 (no experts), without
L_SCL, with equal gate weights, Conquer on one source, and the baselines of chapter 06
(MedKLIP-, MGCA- and CLIP-style; the KAD-style baseline is "Conquer only").
:func:`variant_model`, :func:`variant_checkpoint` and :func:`variant_history` get a variant's
model, checkpoint and training history from the store
(:mod:`unichest_lib.training.store`, which trains it once per configuration and seed): the
one way a chapter gets a trained model. The profile constants say which seeds, grids and
levels the chapters run.

Introduced in ``notebooks/02_conquer.ipynb``; chapter 07 (``notebooks/07_claims.ipynb``)
lists every claim they feed.
"""

from __future__ import annotations

import dataclasses
import pathlib

from ..config import Config, ConfigError
from ..training import store
from . import replay

#: Training seeds per profile (the world's seed stays fixed: one test set, many models).
SEEDS = {"smoke": (0, 1), "tutorial": (0, 1, 2), "paper": (0, 1, 2)}
#: The (K, λ) grid of the robustness claim (paper Fig. 8: K 3–5, λ 0.3–0.7) per profile.
GRID = {"smoke": ((2, 4), (0.5,)), "tutorial": ((3, 4, 5), (0.3, 0.5, 0.7)),
        "paper": ((3, 4, 5), (0.3, 0.5, 0.7))}
#: Heterogeneity levels compared by the "gain grows with heterogeneity" claim.
LEVELS = (0.0, 1.0)
#: Per profile: the image backbones chapter 05 compares when its ``backbones`` parameter is
#: left at None (Table VIII, image side; each adds a Conquer and a Divide run per seed).
BACKBONES = {"smoke": ("resnet18",), "tutorial": (), "paper": ("resnet50", "resnet101")}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named training run: its store ``stage`` and the overrides of the base config."""

    name: str
    stage: str  # "conquer", "divide" or "continued" (unichest_lib.training.keys.STAGES)
    overrides: tuple[tuple[str, object], ...]
    role: str


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("UniChest", "divide", (), "Conquer, then Divide with K query networks (Eqs. 4, 7)"),
    Variant("Conquer only", "conquer", (), "the Conquer checkpoint that Divide starts from"),
    Variant("Conquer continued", "continued", (),
            "compute-matched control: Conquer trained for as many more epochs as Divide adds"),
    Variant("K = 1", "divide", (("K", 1),),
            "Divide without experts: QN1 alone, same schedule on the frozen encoder"),
    Variant("no L_SCL", "divide", (("scl_weight", 0.0),),
            "Divide without the source contrastive loss (weight 0 in Eq. 7)"),
    Variant("equal weights", "divide", (("gate", "uniform"),),
            "Divide with every expert weighted 1/(K-1): no gate, no L_SCL (paper Table VI)"),
    Variant("one source", "conquer", (("sources", "<val_source>"),),
            "Conquer trained on the validation source alone (paper Table VI, first row)"),
    # the baselines of Tables IV and V (unichest_lib.baselines), pre-trained on all sources
    Variant("MedKLIP-style", "conquer", (("method", "medklip"), ("query_text", "description")),
            "MedKLIP's recipe: description queries, existence + position losses (MedKLIP-multi)"),
    Variant("MGCA-style", "conquer", (("method", "mgca"),),
            "MGCA's recipe: dual encoders, global + token + prototype alignment, no labels"),
    Variant("CLIP-style", "conquer", (("method", "clip"),),
            "CLIP / CheXzero: global image-text contrast only, no labels"),
)}


def variant_config(cfg: Config, name: str, seed: int | None = None, **extra) -> Config:
    """The configuration of variant ``name`` (and ``seed``) built from the base ``cfg``."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}")
    over = {k: ((cfg.val_source,) if v == "<val_source>" else v)
            for k, v in VARIANTS[name].overrides}
    if seed is not None:
        over["seed"] = seed
    return cfg.replace(**over, **extra)


def _refuse_training(c: Config, name: str) -> None:
    if replay.mode() in ("recorded", replay.STORED):
        replay.no_training(store.is_valid(c, VARIANTS[name].stage), f"{name} (seed {c.seed})")


def refuse_untrained(cfg: Config, name: str, seeds) -> None:
    """Raise :class:`.replay.RecordMissing` now when a run of ``name`` for one of ``seeds``
    would have to train in a mode that forbids it: a study that does costly work before it
    reaches its models calls this first, so that trying it without training fails at once."""
    for seed in seeds:
        _refuse_training(variant_config(cfg, name, seed), name)


def variant_checkpoint(cfg: Config, name: str, seed: int | None = None, *, progress: bool = True,
                       **extra) -> pathlib.Path:
    """The stored checkpoint of variant ``name`` (trained first when missing)."""
    c = variant_config(cfg, name, seed, **extra)
    _refuse_training(c, name)
    return store.stage_checkpoint(c, VARIANTS[name].stage, progress=progress)


def stored(cfg: Config, names, seeds=None) -> bool:
    """Whether every variant of ``names`` is in the store for every seed of ``seeds`` (default:
    the profile's), valid and of this configuration: what a build may show without training."""
    seeds = SEEDS[cfg.profile] if seeds is None else seeds
    return all(store.is_valid(variant_config(cfg, n, sd), VARIANTS[n].stage)
               for n in names for sd in seeds)


def variant_model(cfg: Config, name: str, seed: int | None = None, *, progress: bool = True,
                  **extra):
    """The trained model of variant ``name``, in eval mode: the one way a chapter gets a
    trained model (through the store, which trains it first when it is missing)."""
    c = variant_config(cfg, name, seed, **extra)
    _refuse_training(c, name)
    return store.load_model(c, VARIANTS[name].stage, progress=progress)


def variant_history(cfg: Config, name: str, seed: int | None = None, *, progress: bool = True,
                    **extra):
    """The training history of variant ``name`` (one row per optimiser step, one validation
    row per epoch; :func:`unichest_lib.training.store.history`)."""
    c = variant_config(cfg, name, seed, **extra)
    _refuse_training(c, name)
    return store.history(c, VARIANTS[name].stage, progress=progress)


__all__ = ["BACKBONES", "GRID", "LEVELS", "SEEDS", "VARIANTS", "Variant", "refuse_untrained", "stored",
           "variant_checkpoint", "variant_config", "variant_history", "variant_model"]
