"""The paper's two training stages (Section III-C) and the compute-matched control.

* :func:`conquer` — Eq. 4: the image encoder, the text encoder and QN¹ learn from every
  source in ``cfg.sources`` at once.
* :func:`divide` — Eq. 7: starting from the best Conquer checkpoint (selected by aAUC on the
  *validation* split of ``cfg.val_source``, never the test split), both encoders are frozen,
  K−1 fresh expert query networks, the gate Φ1 and the projection Φ2 join, and only the
  MoE-QN trains.
* :func:`continue_conquer` — the control: the Conquer checkpoint trained further with Eq. 4
  for as many epochs as Divide adds.

Each takes **explicit paths**: ``out_dir``, where its run writes its "best" and "last"
checkpoints, and for Divide and the control the Conquer checkpoint to start from. None of
them decides where artifacts live or trains a missing upstream stage: that is the store's job
(:mod:`.store`), the one orchestrator. All of them run the same :class:`~.trainer.Trainer`.

Introduced in ``notebooks/02_conquer.ipynb`` and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from ..config import Config
from . import checkpoints
from .features import RunCache
from .keys import DIVIDE_ONLY, conquer_fields, conquer_key, continued_key, divide_key, recorded
from .rng import seed_everything
from .trainer import Callback, Trainer, TrainResult


def training_data(cfg: Config):
    """The training split of every ``cfg.sources`` and the validation split of
    ``cfg.val_source``: what each stage trains and selects on."""
    from .. import data

    return (data.make_dataset(cfg, cfg.sources, "train"),
            data.make_dataset(cfg, [cfg.val_source], "valid"))


def conquer(cfg: Config, out_dir, *, progress: bool = True, resume: bool = False,
            callbacks: Sequence[Callback] = ()) -> TrainResult:
    """The Conquer stage (Eq. 4): encoders + QN¹ on the training split of all ``cfg.sources``
    (or a baseline's pre-training, ``cfg.method``: :mod:`unichest_lib.baselines`).

    Checkpoints go to ``out_dir``; ``resume`` continues from its "last" checkpoint.
    ``callbacks`` (:class:`~.trainer.Callback`) may add numbers to each epoch's validation row.
    """
    from .. import baselines

    cfg = cfg.validate()
    seed_everything(cfg.seed, cfg.deterministic)
    train_set, val_set = training_data(cfg)
    model = initial_model(cfg, "conquer", train_set.classes)
    trainer = Trainer(cfg, "conquer", out_dir, loss_fn=baselines.conquer_loss_fn(cfg),
                      callbacks=[RunCache(conquer_key(cfg)), *callbacks], progress=progress)
    return trainer.fit(model, train_set, val_set, resume=resume)


def initial_model(cfg: Config, stage: str, classes, conquer_checkpoint=None):
    """The model a ``stage`` run of ``cfg`` starts from, before its first step: a fresh model
    (Conquer; a baseline's for ``cfg.method``), the fresh model loaded from
    ``conquer_checkpoint`` and put in the Divide stage (Divide: :func:`init_from_conquer`), or
    the Conquer model itself (the continued control). Deterministic for a given ``cfg`` and
    checkpoint: what :meth:`Trainer.fit <unichest_lib.training.trainer.Trainer.fit>` checks a
    reader's model against before serving a stored run."""
    from .. import baselines
    from ..model import UniChest

    if stage == "conquer":
        return baselines.build_model(cfg, classes)
    if conquer_checkpoint is None:
        raise ValueError(f"the {stage} stage starts from a Conquer checkpoint; pass its path")
    if stage == "divide":
        model = UniChest(cfg, classes)
        init_from_conquer(model, conquer_checkpoint)
        return model
    if stage == "continued":
        return checkpoints.load(conquer_checkpoint, _as_saved(cfg, conquer_checkpoint))
    raise ValueError(f"stage {stage!r} is not valid; choose conquer, divide or continued")


def _as_saved(cfg: Config, conquer_checkpoint) -> Config:
    """``cfg`` with the Divide-only architecture (K, the gate, Φ2) of the Conquer checkpoint:
    one Conquer artifact serves every K, and a Conquer-stage model (the continued control)
    keeps the experts it was saved with, unused, so its own checkpoint loads back."""
    saved = checkpoints.read_meta(conquer_checkpoint)["config"]
    keep = ("divide_epochs", "divide_on_features")  # the run's schedule, not the model
    return cfg.replace(**{f: saved[f] for f in DIVIDE_ONLY if f in saved and f not in keep})


def init_from_conquer(model, conquer_path) -> None:
    """Load a Conquer checkpoint into a fresh ``model`` and enter the Divide stage: every
    tensor except the modules that only Divide trains (the K−1 experts, Φ1, Φ2 keep their
    fresh random initialisation, as the paper says), then ``model.start_divide()``."""
    tensors, meta = checkpoints.read_tensors(conquer_path)
    if meta.get("stage") != "conquer":
        raise checkpoints.CheckpointError(
            f"{conquer_path} is a {meta.get('stage')!r} checkpoint; Divide starts from a Conquer one")
    inactive = {n for n, p in model.named_parameters() if not p.requires_grad}
    model.start_divide()
    divide_only = {n for n, p in model.named_parameters() if p.requires_grad and n in inactive}
    # the checkpoint's own experts (untrained, maybe of another K) are not wanted
    state = model.state_dict()
    tensors = {k: v for k, v in tensors.items()
               if checkpoints.model_key(k) in state and checkpoints.model_key(k) not in divide_only}
    checkpoints.load_model_state(model, tensors, meta, skip=divide_only,
                                 source=f"Conquer checkpoint {conquer_path}")


def _check_conquer_settings(meta: dict, cfg: Config) -> None:
    """Warn when the Conquer checkpoint was trained with other upstream settings than ``cfg``."""
    saved = meta["config"]
    now = cfg.to_dict()
    diff = [f"{f}: checkpoint {recorded(saved, f)!r}, now {now[f]!r}"
            for f in conquer_fields() if recorded(saved, f) != now[f] and f != "seed"]
    if diff:
        warnings.warn("the Conquer checkpoint was trained with other settings than this Divide "
                      "run:\n  " + "\n  ".join(diff), RuntimeWarning, stacklevel=3)


def divide(cfg: Config, conquer_checkpoint, out_dir, *, progress: bool = True,
           resume: bool = False, callbacks: Sequence[Callback] = (),
           features=None) -> TrainResult:
    """The Divide stage (Eq. 7) from the Conquer checkpoint at ``conquer_checkpoint``, written
    to ``out_dir``. Encoders are frozen; only the MoE-QN, Φ1 and Φ2 are optimised.

    With ``cfg.divide_on_features`` the steps run on stored frozen patches
    (:mod:`unichest_lib.training.features`), shared by every run from this Conquer checkpoint;
    ``features`` passes ones already encoded from it and this training split.
    """
    from ..baselines import check_has_divide

    cfg = cfg.validate()
    check_has_divide(cfg)
    train_set, val_set = training_data(cfg)
    meta = checkpoints.read_meta(conquer_checkpoint)
    checkpoints.check_compatible(meta, cfg, train_set.classes)
    _check_conquer_settings(meta, cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    model = initial_model(cfg, "divide", train_set.classes, conquer_checkpoint)
    cache = RunCache(f"{divide_key(cfg)}:{meta['sha256']}",  # this Divide from this Conquer
                     encoder_sha256=meta["sha256"], features=features)
    trainer = Trainer(cfg, "divide", out_dir, callbacks=[cache, *callbacks], progress=progress)
    return trainer.fit(model, train_set, val_set, resume=resume)


def continue_conquer(cfg: Config, conquer_checkpoint, out_dir, *, progress: bool = True,
                     resume: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """The compute-matched control of Divide: the Conquer checkpoint at ``conquer_checkpoint``
    trained further with Eq. 4 (encoders, text projection and QN¹ all trainable, training-time
    augmentation) for ``cfg.divide_epochs`` epochs, i.e. as many optimiser steps as the Divide
    stage adds, with a fresh warm-up + cosine schedule, written to ``out_dir``. If UniChest
    beats this, its gain is not just more training. Introduced in
    ``notebooks/03_divide.ipynb``."""
    from ..baselines import check_has_divide

    cfg = cfg.validate()
    check_has_divide(cfg, "the compute-matched continued run")
    meta = checkpoints.read_meta(conquer_checkpoint)
    if meta.get("stage") != "conquer":
        raise checkpoints.CheckpointError(
            f"{conquer_checkpoint} is a {meta.get('stage')!r} checkpoint; the continued run "
            "starts from a Conquer one")
    train_set, val_set = training_data(cfg)
    checkpoints.check_compatible(meta, cfg, train_set.classes)
    _check_conquer_settings(meta, cfg)
    cfg = _as_saved(cfg, conquer_checkpoint)  # what its checkpoint will say it is
    seed_everything(cfg.seed, cfg.deterministic)
    model = initial_model(cfg, "continued", train_set.classes, conquer_checkpoint)
    cache = RunCache(f"{continued_key(cfg)}:{meta['sha256']}")
    trainer = Trainer(cfg, "continued", out_dir, callbacks=[cache, *callbacks], progress=progress)
    return trainer.fit(model, train_set, val_set, resume=resume)


__all__ = ["conquer", "continue_conquer", "divide", "init_from_conquer", "initial_model",
           "training_data"]
