"""The baselines of the paper's comparison tables (Tables IV and V), trained in the same harness.

``cfg.method`` (:data:`unichest_lib.config.METHODS`) says what is pre-trained. ``"unichest"``
is the library's own model (:class:`unichest_lib.model.UniChest`); its Conquer stage alone is
the **KAD-style** baseline, since UniChest's Conquer is KAD's recipe (Dai et al. 2024, Sec.
III-C). The others are one module each, built on the same image and text encoders, data,
trainer, store, evaluation and statistics:

``medklip``  MedKLIP-style (Wu et al. 2023): description queries, report triplets, an
             existence head and a position contrastive loss, no global image-text loss.
``mgca``     MGCA-style (Wang et al. 2022): dual encoders, global, token-patch and
             prototype (Sinkhorn-Knopp) alignment, no query decoder.
``clip``     CLIP-style global contrastive pre-training (the CheXzero recipe).

Each baseline module offers ``build_model(cfg, classes)`` (a module with the model interface
the evaluation reads: ``classes``, ``cfg``, ``stage``, ``image_encoder``,
``class_queries(names)`` and ``forward(images, texts=None, queries=None) -> {"logits", ...}``)
and ``conquer_loss(out, batch, cfg)`` (a dict of ``*_loss`` terms plus ``"loss"``). A model
may name extra output and batch keys its loss reads (``loss_out_keys``, ``loss_batch_keys``).
Baselines are pre-trained once (the store's ``"conquer"`` stage) and have no Divide stage.
The package sits between ``model`` and ``training``: it imports the model's parts (and data),
and the training stages import it; its losses are its own pure functions.

Introduced in ``notebooks/06_baselines.ipynb`` (Against the baselines).
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

from ..config import Config, ConfigError

#: The module of each baseline method (UniChest itself lives in unichest_lib.model).
MODULES = {"medklip": "medklip", "mgca": "mgca", "clip": "clip"}


def _module(method: str):
    if method not in MODULES:
        raise ConfigError(f"method {method!r} has no baseline module; baselines are "
                          f"{sorted(MODULES)}")
    return importlib.import_module(f".{MODULES[method]}", __name__)


def build_model(cfg: Config, classes: Sequence[str]):
    """A fresh model of ``cfg.method`` over ``classes`` (UniChest in its Conquer stage)."""
    if cfg.method == "unichest":
        from ..model import UniChest

        return UniChest(cfg, tuple(classes))
    return _module(cfg.method).build_model(cfg, tuple(classes))


def conquer_loss_fn(cfg: Config) -> Callable | None:
    """The pre-training loss of a baseline ``cfg.method``; None for UniChest, whose Conquer
    loss (Eq. 4) is the trainer's default (:func:`unichest_lib.training.losses.conquer_loss`)."""
    return None if cfg.method == "unichest" else _module(cfg.method).conquer_loss


def check_has_divide(cfg: Config, what: str = "the Divide stage") -> None:
    """ConfigError unless ``cfg.method`` is UniChest: the baselines are pre-trained once."""
    if cfg.method != "unichest":
        raise ConfigError(f"{what} belongs to UniChest; method {cfg.method!r} is a baseline "
                          "with one pre-training stage (use its 'conquer' run)")


__all__ = ["MODULES", "build_model", "check_has_divide", "conquer_loss_fn"]
