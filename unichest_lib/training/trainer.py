"""The trainer that runs every stage of UniChest (paper Section III-C).

:class:`Trainer` runs one stage: AdamW + cosine annealing (optional linear warm-up,
:mod:`.optim`), bf16 autocast, train-time augmentation with Fourier amplitude mixup
(:mod:`.augment`), seeded data order (:mod:`.rng`), a validation aAUC after every epoch (on the
*validation* split of ``cfg.val_source``, never the test split), "best" and "last"
checkpoints, and resuming from "last" that reproduces an uninterrupted run (bit-identical on
CPU with ``deterministic=True``). Under ``torchrun`` it trains with DistributedDataParallel
(:mod:`.distributed`). The paper's stages that build a model and run it are :mod:`.stages`.

Introduced in ``notebooks/02_conquer.ipynb`` and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import hardware
from ..config import Config, progress_bars
from ..evaluation.metrics import macro_auc
from ..model.inference import evaluating, predict_batches, query_forward
from . import checkpoints, distributed, losses
from .keys import check_stage
from .optim import make_optimizer, make_scheduler
from .rng import epoch_seed, rng_state, set_rng_state


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; the message names the step, epoch, term(s) and batch."""


@dataclasses.dataclass
class TrainResult:
    """What a training stage returns.

    ``history`` has one row per optimiser step (``split == "train"``: stage, epoch, step, lr
    and each loss term) and one per epoch (``split == "valid"``: ``val_aAUC``).
    """

    model: torch.nn.Module
    history: pd.DataFrame
    checkpoint: pathlib.Path  # the best checkpoint (by validation aAUC)
    best_metric: float
    last_checkpoint: pathlib.Path
    out_dir: pathlib.Path
    served: bool = False  # True when the artifact store already held this run (not retrained)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models hold exactly the same tensors (names, shapes, values)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)




def class_index(model_classes: Sequence[str], data_classes: Sequence[str]) -> list[int]:
    """Columns of the model's classes that hold each of ``data_classes``."""
    missing = [c for c in data_classes if c not in model_classes]
    if missing:
        raise ValueError(f"the validation source has classes {missing} the model was not trained "
                         f"on; the model knows {list(model_classes)}")
    return [list(model_classes).index(c) for c in data_classes]




#: What serves :meth:`Trainer.fit` when the trainer has no ``out_dir``: ``fn(trainer, model,
#: train_set, val_set) -> TrainResult``. The artifact store registers its own
#: (:func:`serve_runs_with`) when it is imported, which ``import unichest_lib.training`` does;
#: the trainer cannot import the store, which trains through the stages, which run the trainer.
_RUN_SERVER: Callable | None = None


def serve_runs_with(server: Callable) -> None:
    """Make ``server(trainer, model, train_set, val_set) -> TrainResult`` serve every
    :meth:`Trainer.fit` call that has no ``out_dir`` (the store's
    :func:`~unichest_lib.training.store.fit`)."""
    global _RUN_SERVER
    _RUN_SERVER = server


class Callback:
    """What a run calls at two moments; subclass and override either. ``on_bind(trainer)``:
    the model and the data are attached. ``on_validation(trainer)``: returns numbers (a dict)
    to add to this epoch's validation row, or None. The caches runs share arrive this way
    (:class:`~unichest_lib.training.features.RunCache`)."""

    def on_bind(self, trainer: "Trainer") -> None:
        return None

    def on_validation(self, trainer: "Trainer") -> dict | None:
        return None


class EpochMetrics(Callback):
    """``fn(model, epoch) -> dict``: numbers added to each epoch's validation row."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def on_validation(self, trainer: "Trainer") -> dict | None:
        return self.fn(trainer.model, trainer.epoch + 1)


# ---- the trainer ---------------------------------------------------------------------------
_LOSS_OUT_KEYS = ("image_emb", "text_emb", "logits", "probs", "gate", "gate_proj",
                  "bcl_logit_scale")
_LOSS_BATCH_KEYS = ("labels", "mask", "source")


class Trainer:
    """Runs one stage: epochs of optimiser steps, a validation aAUC after each epoch, best and
    last checkpoints, and resuming from the last one.

    The shape researchers know (d2l, Lightning)::

        trainer = Trainer(cfg, "conquer")                # how to train: the stage's recipe
        result = trainer.fit(model, train_set, val_set)  # what to train, on what

    ``model`` is a :class:`~unichest_lib.model.UniChest` already in ``stage`` (a baseline's
    model for ``cfg.method``); ``train_set`` and ``val_set`` are
    :class:`~unichest_lib.data.samples.MultiSourceDataset` s; ``loss_fn(out, batch, cfg)``
    returns a dict of terms ending in ``_loss`` plus ``"loss"``; ``callbacks`` are
    :class:`Callback` s (extra validation numbers, the caches runs share).

    **Where the run goes.** With ``out_dir`` the run trains there and writes its "best" and
    "last" checkpoints. Without it, :meth:`fit` goes through the artifact store
    (:mod:`.store`): the run of this configuration is trained once, filed under its key and
    served to every later call (its weights are loaded into ``model``, its history returned),
    which is how the chapters' visible ``trainer.fit(...)`` calls cost nothing the second
    time. The model must then be the one the stored run starts from
    (:func:`~unichest_lib.training.stages.initial_model`), or the call is refused.

    To take single steps by hand, :meth:`bind` the model and the data first.
    """

    def __init__(self, cfg: Config, stage: str, out_dir=None, *, loss_fn: Callable | None = None,
                 callbacks: Sequence[Callback] = (), progress: bool = True):
        check_stage(stage)
        self.cfg, self.stage, self.progress = cfg, stage, progress
        self.callbacks = list(callbacks)
        self.out_dir = None if out_dir is None else pathlib.Path(out_dir)
        # what a RunCache callback sets when runs share work (see Callback)
        self.run_key, self.encoder_sha256 = "", ""
        self.features, self.text_cache = None, None
        self.device = distributed.init_from_env(cfg.device) if distributed.launched_by_torchrun() \
            else distributed.resolve_device(cfg.device)
        self.loss_fn = loss_fn or (losses.divide_loss if stage == "divide" else losses.conquer_loss)
        self.epochs = cfg.conquer_epochs if stage == "conquer" else cfg.divide_epochs  # continued:
        # as many epochs (and steps) as the Divide stage, the compute-matched control
        self.aug_generator = torch.Generator()
        self.epoch, self.step = 0, 0
        self.best_metric, self.best_epoch = -math.inf, -1
        self.rows: list[dict] = []
        self._augment = None
        self._val_store = None
        self.model = None

    def bind(self, model, train_set, val_set) -> "Trainer":
        """Attach the model and the data: the device, the loaders, AdamW and its schedule
        (built from ``model``'s trainable parameters). :meth:`fit` calls it."""
        if train_set is None or val_set is None:
            raise TypeError("the trainer needs the model and both datasets: "
                            "trainer.fit(model, train_set, val_set)")
        self.model = model.to(self.device)
        self.net = distributed.wrap(self.model, self.device)
        self.train_set, self.val_set = train_set, val_set
        for cb in self.callbacks:
            cb.on_bind(self)
        if self.features is not None and (self.stage != "divide"
                                          or len(train_set) != self.features.n_rows):
            raise ValueError(f"stored features ({self.features.n_rows} rows) serve only the "
                             f"Divide stage of the dataset they were encoded from "
                             f"({len(train_set)} rows here)")
        self.train_loader = self._train_loader()
        self.steps_per_epoch = len(self.train_loader)
        if self.cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, self.cfg.max_steps_per_epoch)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.scheduler = make_scheduler(self.optimizer, self.cfg, self.epochs * self.steps_per_epoch)
        return self

    def _warm_text_cache(self) -> None:
        """Encode every class name and training text once, in a fixed order, when the text
        backbone is frozen. Its pooled features are cached per text, and a feature computed
        inside a padded batch depends (in the last float bits) on the batch's other texts;
        a fixed order makes a resumed run, or any new process, see exactly the features an
        uninterrupted run sees. The class names (the queries) are pooled first, alone and in
        the model's order, exactly as ``UniChest.class_queries`` pools them for a reloaded
        checkpoint: otherwise, under bf16, a checkpoint scored later differs from the
        validation aAUC it was selected by (0.630 against 0.623 was seen at ``tutorial``).
        Other query texts (``cfg.query_text``) follow, group by group, as the model pools them."""
        enc = getattr(self.model, "text_encoder", None)
        if enc is None or not getattr(enc, "backbone_frozen", False):
            return
        enc.clear_cache()
        enc.pooled(list(self.model.classes))
        for group in getattr(self.model, "query_groups", list)():  # descriptions, phrasings
            enc.pooled(group)
        if self.text_cache is not None:  # pooled features shared by runs of one text backbone
            enc.add_cached(self.text_cache)
        enc.pooled(sorted(set(self.train_set.table.texts)))
        if self.text_cache is not None:
            self.text_cache.update(enc.cached())

    def _encode_features(self) -> None:
        """``cfg.divide_on_features``: the training split's patches under the frozen encoder
        (:func:`~unichest_lib.training.features.frozen_patches`) unless a callback gave them."""
        if self.stage == "divide" and self.cfg.divide_on_features and self.features is None:
            from .features import frozen_patches

            self.features = frozen_patches(self.model, self.train_set, self.cfg,
                                           self.encoder_sha256)

    # -- data --------------------------------------------------------------------------
    def _train_loader(self):
        from .. import data

        if not distributed.is_distributed():
            return data.make_loader(self.train_set, self.cfg, train=True)
        from torch.utils.data import DataLoader, DistributedSampler

        local = distributed.local_batch_size(self.cfg.batch_size)
        sampler = DistributedSampler(self.train_set, shuffle=True, seed=self.cfg.seed, drop_last=True)
        return DataLoader(self.train_set, batch_size=local, sampler=sampler, drop_last=True,
                          num_workers=self.cfg.num_workers, collate_fn=data.collate)

    def _val_loader(self):
        from .. import data

        return data.make_loader(self.val_set, self.cfg, train=False)

    def _seed_epoch(self, epoch: int) -> None:
        s = epoch_seed(self.cfg.seed, self.stage, epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(s)
        elif self.train_loader.generator is not None:
            self.train_loader.generator.manual_seed(s)
        self.aug_generator.manual_seed(s)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Training-batch augmentation: ``augment.train_transform`` then Fourier amplitude
        mixup with probability ``cfg.fourier_mixup_p`` (paper Section IV-B)."""
        if self.cfg.augment or self.cfg.fourier_mixup_p > 0:
            from . import augment
        if self.cfg.augment:
            if self._augment is None:
                self._augment = augment.train_transform(self.cfg)
            images = self._augment(images, generator=self.aug_generator)
        if self.cfg.fourier_mixup_p > 0:
            images = augment.fourier_amplitude_mixup(images, self.cfg.fourier_mixup_p,
                                                     self.aug_generator)
        return images

    # -- one step -----------------------------------------------------------------------
    def loss_terms(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """The stage's loss on the *global* batch: loss inputs are cast to float32 and, under
        DDP, gathered from every rank with gradients (global negatives)."""
        out_keys = _LOSS_OUT_KEYS + tuple(getattr(self.model, "loss_out_keys", ()))
        batch_keys = _LOSS_BATCH_KEYS + tuple(getattr(self.model, "loss_batch_keys", ()))
        out = {k: v.float() for k, v in out.items() if k in out_keys}
        batch = {k: batch[k].to(self.device) for k in batch_keys}
        if distributed.is_distributed():
            out, batch = distributed.gather_batch(out), distributed.gather_batch(batch)
        return self.loss_fn(out, batch, self.cfg)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the loss terms as floats. With
        ``cfg.query_text == "ensemble"`` each class's query is the phrasing drawn for this
        step (``UniChest.query_pick``)."""
        pick = getattr(self.model, "query_pick", lambda *a: None)(self.stage, self.step)
        kw = {} if pick is None else {"query_pick": pick}
        if self.features is not None:  # Divide on stored frozen patches: no encoder, no augment
            patches = self.features.batch(batch["index"], self.device)
            with hardware.autocast(self.cfg.amp, self.device):
                out = self.net(None, texts=batch["text"], patches=patches,
                               grid=self.features.grid, **kw)
        else:
            images = batch["image"].to(self.device, non_blocking=True)
            images = self.augment(images)
            with hardware.autocast(self.cfg.amp, self.device):
                out = self.net(images, texts=batch["text"], **kw)
        terms = self.loss_terms(out, batch)
        values = self._check_finite(terms, batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        self.model.clamp_logit_scale_()  # CLIP: a learnable 1/τ of L_BCL stays <= 100
        self.scheduler.step()
        self.step += 1
        return values

    def _check_finite(self, terms: dict, batch: dict) -> dict[str, float]:
        """The terms as floats, read back in one transfer (one device sync per step), after
        checking that all are finite."""
        stacked = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        values = dict(zip(terms, stacked.tolist()))
        bad = [k for k, v in values.items() if k != "loss" and not math.isfinite(v)]
        if bad or not math.isfinite(values["loss"]):
            names = self.train_set.sources
            src = sorted({names[int(s)] for s in batch["source"]})
            idx = batch["index"].tolist() if "index" in batch else []
            raise NonFiniteLossError(
                f"{self.stage} stage: non-finite loss at step {self.step + 1} (epoch "
                f"{self.epoch + 1}): offending term(s) {bad or ['loss']} = "
                f"{ {k: values[k] for k in (bad or ['loss'])} }; batch sources {src}, "
                f"sample indices {idx[:16]}{' ...' if len(idx) > 16 else ''}. No checkpoint was "
                "written for this step; lower lr, check the inputs, or set amp=False.")
        return values

    # -- epochs -------------------------------------------------------------------------
    def fit(self, model=None, train_set=None, val_set=None, *,
            resume: bool = False) -> TrainResult:
        """Train ``model`` on ``train_set``, selecting its best epoch on ``val_set``; returns a
        :class:`TrainResult`. Without an ``out_dir`` the run goes through the artifact store
        (trained once, then served: see the class docstring); with one it trains the
        remaining epochs there (all of them unless ``resume``). With no arguments it trains
        what :meth:`bind` attached."""
        if model is None:
            if self.model is None:
                raise TypeError("fit needs the model and the data: trainer.fit(model, "
                                "train_set, val_set)")
            model, train_set, val_set = self.model, self.train_set, self.val_set
        if self.out_dir is None:
            if _RUN_SERVER is None:
                raise RuntimeError("no artifact store to serve a run without out_dir: import "
                                   "unichest_lib.training (its store registers itself) or pass "
                                   "out_dir")
            if train_set is None or val_set is None:
                raise TypeError("the trainer needs the model and both datasets: "
                                "trainer.fit(model, train_set, val_set)")
            return _RUN_SERVER(self, model, train_set, val_set)
        if model is not self.model or train_set is not self.train_set:
            self.bind(model, train_set, val_set)
        if resume and checkpoints.exists(self.last_path):
            self.restore(self.last_path)
        elif resume:
            warnings.warn(f"resume=True but {self.out_dir} holds no 'last' checkpoint of a "
                          f"{self.stage} run; starting from epoch 1", RuntimeWarning, stacklevel=2)
        self._warm_text_cache()  # after restoring: loading weights clears the model's caches
        self._encode_features()
        if self.epochs == 0 and self.epoch == 0:
            self._end_epoch()
        while self.epoch < self.epochs:
            self._run_epoch()
            self._end_epoch()
        distributed.barrier()
        return self.result()

    def _run_epoch(self) -> None:
        from tqdm.auto import tqdm

        self._seed_epoch(self.epoch)
        self.net.train()
        self._epoch_start = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, disable=not (progress_bars(self.progress) and distributed.is_main()),
                   desc=f"{self.stage} {self.epoch + 1}/{self.epochs}", leave=False)
        for i, batch in enumerate(self.train_loader):
            if i >= self.steps_per_epoch:
                break
            lr = self.optimizer.param_groups[0]["lr"]
            terms = self.train_step(batch)
            self.rows.append(dict(stage=self.stage, split="train", epoch=self.epoch + 1,
                                  step=self.step, lr=lr, **terms))
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
        bar.close()

    def _end_epoch(self) -> None:
        # wall time of this epoch's training steps (validation excluded): the cost tables
        spent = time.perf_counter() - getattr(self, "_epoch_start", time.perf_counter())
        metrics = self.validate()
        self.epoch = min(self.epoch + 1, max(self.epochs, 1))
        row = dict(stage=self.stage, split="valid", epoch=self.epoch, step=self.step,
                   train_seconds=spent, **metrics)
        self.rows.append(row)
        value = metrics["val_aAUC"]
        improved = self.best_epoch < 0 or (math.isfinite(value) and value > self.best_metric)
        if improved:
            self.best_metric, self.best_epoch = value, self.epoch
        if not math.isfinite(value):
            warnings.warn(f"{self.stage} epoch {self.epoch}: validation aAUC on "
                          f"{self.cfg.val_source!r} is {value} (no class has both positive and "
                          f"negative samples in its {len(self.val_set)} validation images); the "
                          f"best checkpoint stays at epoch {self.best_epoch}. Use more images or "
                          "another val_source", RuntimeWarning, stacklevel=2)
        if distributed.is_main():
            if improved:
                checkpoints.save(self.best_path, self.model, self.cfg, extra=self._extra())
            self.save_last()
        distributed.barrier()

    def validate(self) -> dict[str, float]:
        """aAUC on the validation split of ``cfg.val_source`` (+ the eval hook's numbers).
        A Divide run on stored features validates on the stored patches of the validation
        split (encoded once: the frozen encoder gives the same patches every epoch)."""
        idx = class_index(self.model.classes, self.val_set.classes)
        ss = []
        with evaluating(self.model):
            with torch.no_grad():  # outside inference mode: the model may cache its queries
                queries = self.model.class_queries()
            vf = None if self.features is None else self._val_features()
            loader = self._val_loader() if vf is None else vf.batches(self.cfg.eval_batch_size)
            forward = query_forward(self.model, queries, None if vf is None else vf.grid)
            for _, out in predict_batches(self.model, loader, amp=self.cfg.amp,
                                          device=self.device, forward=forward):
                ss.append(out["logits"].float()[:, idx].cpu().numpy())
        t = self.val_set.table
        y, m, s = np.nan_to_num(t.labels, nan=0.0), t.mask, np.concatenate(ss)
        metrics = {"val_aAUC": macro_auc(y, s, m, self.val_set.classes)}
        for cb in self.callbacks:
            metrics.update(cb.on_validation(self) or {})
        return metrics

    def _val_features(self):
        """The validation split's patches under the frozen encoder (encoded once)."""
        from .features import frozen_patches

        if self._val_store is None:
            self._val_store = frozen_patches(self.model, self.val_set, self.cfg,
                                             self.encoder_sha256)
        return self._val_store

    # -- checkpoints --------------------------------------------------------------------
    @property
    def last_path(self) -> pathlib.Path:
        return self.out_dir / "last"

    @property
    def best_path(self) -> pathlib.Path:
        return self.out_dir / "best"

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def _extra(self) -> dict:
        return dict(stage=self.stage, run_key=self.run_key, epoch=self.epoch, step=self.step,
                    best_metric=self.best_metric, best_epoch=self.best_epoch)

    def save_last(self) -> None:
        """The resumable state at an epoch boundary: model, optimiser, schedule, RNG, history."""
        extra = self._extra()
        extra["history"] = self.history().to_dict(orient="list")
        checkpoints.save(self.last_path, self.model, self.cfg, optimizer=self.optimizer,
                         scheduler=self.scheduler, extra=extra,
                         extra_tensors={f"rng.{k}": v for k, v in rng_state().items()})

    def restore(self, path) -> None:
        """Continue from checkpoint ``path`` written by :meth:`save_last` of the same run."""
        meta = checkpoints.read_meta(path)
        extra = meta["extra"]
        if extra.get("run_key") != self.run_key or extra.get("stage") != self.stage:
            raise checkpoints.CheckpointError(
                f"cannot resume from {path}: it belongs to a different configuration or stage "
                f"(stage {extra.get('stage')!r}); use another out_dir or resume=False")
        tensors, meta = checkpoints.read_tensors(path, meta)
        checkpoints.load_model_state(self.model, tensors, meta, source=f"checkpoint {path}")
        self.optimizer.load_state_dict(checkpoints.optimizer_state(tensors, meta))
        self.scheduler.load_state_dict(meta["scheduler"])
        rng = checkpoints.extra_tensors(tensors)
        set_rng_state({k[len("rng."):]: v for k, v in rng.items() if k.startswith("rng.")})
        self.epoch, self.step = extra["epoch"], extra["step"]
        self.best_metric, self.best_epoch = extra["best_metric"], extra["best_epoch"]
        history = losses.current_term_names(pd.DataFrame(extra["history"]))
        self.rows = history.to_dict(orient="records")

    def result(self) -> TrainResult:
        return TrainResult(model=self.model, history=self.history(), checkpoint=self.best_path,
                           best_metric=self.best_metric, last_checkpoint=self.last_path,
                           out_dir=self.out_dir)


__all__ = ["Callback", "EpochMetrics", "NonFiniteLossError", "TrainResult", "Trainer",
           "class_index", "same_state", "serve_runs_with"]
