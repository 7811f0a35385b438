"""What identifies a trained run: the stages, and the keys the artifact store files them under.

A leaf module (it reads only :mod:`unichest_lib.config` and :mod:`unichest_lib.hardware`), so the trainer, the stages, the
store, the evidence and its caches can all ask "which run is this?" without importing each
other.

The **Conquer key** hashes the library version and every :class:`~unichest_lib.config.Config`
field that can change the Conquer result — all of them except :data:`DIVIDE_ONLY` (fields
read only by the Divide stage) and :data:`NOT_UPSTREAM` (fields that change where or how fast,
not what). The **Divide key** hashes the Conquer key plus the Divide fields, so changing ``K``
reuses the Conquer checkpoint while changing ``image_size`` retrains both. The
**continued key** (the compute-matched control) hashes the Conquer key and ``divide_epochs``.

These hashes name every stored artifact: ``tests/test_legacy.py`` pins them to the values the
library computed before, so a change here cannot silently orphan trained checkpoints.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import dataclasses

from .. import hardware
from ..config import Config
from ..fileio import digest

#: The training runs the library knows, in a fixed order (:func:`unichest_lib.training.rng.
#: epoch_seed` uses the position): the paper's two stages, and ``"continued"``, the
#: compute-matched control (Conquer trained further with Eq. 4 for as many epochs as Divide
#: adds). A *model* is only ever in the first two (:data:`unichest_lib.model.MODEL_STAGES`).
STAGES = ("conquer", "divide", "continued")

#: Fields read only by the Divide stage: they do not change the Conquer checkpoint.
DIVIDE_ONLY = ("K", "lam", "scl_dim", "tau_scl", "scl_variant", "combine", "divide_epochs",
               "divide_on_features", "scl_weight", "gate", "gate_input")
#: Fields added after the store keys were pinned (``tests/test_legacy.py``), with the value
#: every earlier run had: at that value a field is left out of the keys, so the artifacts
#: trained before it existed keep their names; any other value names new artifacts.
ADDED_FIELDS: dict[str, object] = {"gate_input": "mean", "dials": [],  # lists: as to_dict gives
                                   "output_stride": 32, "query_text": "name",
                                   "method": "unichest", "method_options": []}
#: The embedded world's content version, bumped when one configuration renders or labels a
#: different world: 2 = the label-meaning dial and the real priors corrected (issue #14).
#: Version 1 is left out of the keys (so the keys pinned in ``tests/test_legacy.py`` are still
#: what version-1 code computed); a later version names new artifacts, so a run trained on an
#: older world is never served for the current one. Real data is not versioned here.
WORLD_VERSION = 3
#: Fields that change where or how fast things run, or which evaluation is done, but not
#: the trained weights (``num_workers`` is safe because augmentation runs in the trainer).
#: ``nan_policy`` was such a field until it was removed; it was never hashed.
NOT_UPSTREAM = ("profile", "cache_dir", "num_workers", "device", "eval_batch_size",
                "downstream", "n_downstream")


def check_stage(stage: str) -> str:
    """``stage`` if it is one of :data:`STAGES`, else a ValueError naming the valid ones."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not valid; choose one of {STAGES}")
    return stage


def keyed(cfg: Config, fields) -> dict:
    """``{field: value}`` of ``fields`` as the keys hash them (an :data:`ADDED_FIELDS` field
    at its old value is left out)."""
    d = cfg.to_dict()
    return {f: d[f] for f in fields if not (f in ADDED_FIELDS and d[f] == ADDED_FIELDS[f])}


def recorded(saved: dict, field: str):
    """``field`` of a configuration record (``Config.to_dict()`` of an earlier run): a field
    of :data:`ADDED_FIELDS` that the record predates had its old value."""
    return saved.get(field, ADDED_FIELDS.get(field))


def conquer_fields() -> tuple[str, ...]:
    """The Config fields the Conquer key hashes (everything upstream of Conquer)."""
    skip = set(DIVIDE_ONLY) | set(NOT_UPSTREAM)
    return tuple(f.name for f in dataclasses.fields(Config) if f.name not in skip)


def world_version(cfg: Config) -> dict:
    """``{"world_version": n}`` for the embedded world after version 1, else ``{}``."""
    return {"world_version": WORLD_VERSION} if cfg.data == "embedded" and WORLD_VERSION != 1 \
        else {}


def precision(cfg: Config) -> dict:
    """``{"precision": "bfloat16"}`` when the run trains under bfloat16 autocast on this
    machine (``cfg.amp`` and native bf16, :func:`unichest_lib.hardware.effective_precision`),
    else ``{}``: float32 is what every run before this field computed on a machine without
    native bf16, so float32 runs keep their names, and a bf16 run is never served to a
    float32 machine (or the other way round)."""
    p = hardware.effective_precision(cfg.amp, cfg.device)
    return {} if p == "float32" else {"precision": p}


def upstream(cfg: Config) -> dict:
    """:func:`keyed` values of every field upstream of Conquer except ``seed``: what the data
    and the training setup are, whatever the seed (caches shared across seeds hash it), with
    the world version and the effective precision."""
    return {**keyed(cfg, [f for f in conquer_fields() if f != "seed"]), **world_version(cfg),
            **precision(cfg)}


def conquer_key(cfg: Config) -> str:
    """sha256 of the library version, every field in :func:`conquer_fields`, the
    :func:`world_version` and the effective :func:`precision`."""
    from .. import __version__

    return digest({"stage": "conquer", "version": __version__,
                    "fields": keyed(cfg, conquer_fields()), **world_version(cfg),
                    **precision(cfg)})


def divide_key(cfg: Config) -> str:
    """sha256 of the Conquer key and every field in :data:`DIVIDE_ONLY`. With
    ``combine="probabilities"`` a marker names new runs: before it, the trainer did not pass
    Eq. 5's probability mix to the loss, so such runs trained on the clipped logit."""
    fix = {"probs_to_loss": 1} if cfg.combine == "probabilities" else {}
    return digest({"stage": "divide", "conquer": conquer_key(cfg),
                    "fields": keyed(cfg, DIVIDE_ONLY), **fix})


def continued_key(cfg: Config) -> str:
    """sha256 of the Conquer key and ``divide_epochs`` (the length of the continued run)."""
    return digest({"stage": "continued", "conquer": conquer_key(cfg),
                    "divide_epochs": cfg.divide_epochs})


def key(cfg: Config, stage: str) -> str:
    """The key of the ``stage`` run of ``cfg`` (one of :data:`STAGES`)."""
    check_stage(stage)
    return {"conquer": conquer_key, "divide": divide_key, "continued": continued_key}[stage](cfg)


__all__ = ["ADDED_FIELDS", "DIVIDE_ONLY", "NOT_UPSTREAM", "STAGES", "WORLD_VERSION", "check_stage",
           "conquer_fields", "conquer_key", "continued_key", "divide_key", "key", "keyed",
           "precision", "recorded", "upstream", "world_version"]
