"""The two training stages of UniChest (paper Section III-C) and the trainer that runs them.

* :func:`conquer` — Eq. 4: the image encoder, the text encoder and QN¹ learn from every
  source in ``cfg.sources`` at once.
* :func:`divide` — Eq. 7: starting from the best Conquer checkpoint (selected by aAUC on the
  *validation* split of ``cfg.val_source``, never the test split), both encoders are frozen,
  K−1 fresh expert query networks, the gate Φ1 and the projection Φ2 join, and only the
  MoE-QN trains.

Both run the same :class:`Trainer`: AdamW + cosine annealing (optional linear warm-up), bf16
autocast, train-time augmentation with Fourier amplitude mixup, seeded data order, a
validation aAUC after every epoch, "best" and "last" checkpoints, and resuming from "last"
that reproduces an uninterrupted run (bit-identical on CPU with ``deterministic=True``).
Under ``torchrun`` it trains with DistributedDataParallel (see :mod:`unichest_lib.distributed`).

Introduced in ``notebooks/02_conquer.ipynb`` and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import random
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from . import checkpoints, distributed, hardware
from .config import Config, progress_bars

#: The trainer's stages: the paper's two, and ``"continued"``, the compute-matched control
#: (Conquer trained further with Eq. 4 for as many epochs as Divide adds).
STAGES = ("conquer", "divide", "continued")


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


# ---- reproducibility --------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch, and switch torch's deterministic algorithms on/off."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    """The seed of the data order and augmentation of one epoch: a pure function of
    (seed, stage, epoch), so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + STAGES.index(stage) * 10_007 + epoch) % 2**63


def rng_state() -> dict[str, torch.Tensor]:
    """The global RNG states (torch, CUDA, numpy, python) as tensors, for a checkpoint."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": torch.tensor([np_state[2], np_state[3], np_state[4]], dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([py_version, -1 if py_gauss is None else 1,
                                     0.0 if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    rest = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         int(rest[0]), int(rest[1]), float(rest[2])))
    version, has_gauss, gauss = state["python_meta"].tolist()
    random.setstate((int(version), tuple(int(v) for v in state["python"].tolist()),
                     gauss if has_gauss > 0 else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---- optimiser and schedule --------------------------------------------------------------
class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine annealing to 0
    at ``total`` steps (paper Section IV-B: AdamW with cosine annealing). A plain object so
    its state is JSON (``LambdaLR`` stores its ``__dict__``)."""

    def __init__(self, total: int, warmup: int = 0):
        self.total, self.warmup = int(total), int(warmup)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over ``model.trainable_parameters()`` only: frozen parameters get no state."""
    params = list(distributed.unwrap(model).trainable_parameters())
    if not params:
        raise ValueError("the model has no trainable parameters in this stage")
    # The fused CPU kernel made the AdamW step of the Divide heads ~4x faster but the whole
    # step only ~3% faster (bench/bench_optimizer.py), and resumed runs were then not always
    # bit-identical to uninterrupted ones (tests/test_train_resume.py); the default is kept.
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: Config, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(total_steps, min(cfg.warmup_steps, total_steps)))


# ---- validation ---------------------------------------------------------------------------
def _auc_fallback(y_true: np.ndarray, y_score: np.ndarray, mask: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    aucs = []
    for j in range(y_true.shape[1]):
        y = y_true[mask[:, j], j]
        if 0 < y.sum() < len(y):
            aucs.append(roc_auc_score(y, y_score[mask[:, j], j]))
    return float(np.mean(aucs)) if aucs else float("nan")


def macro_auc(y_true: np.ndarray, y_score: np.ndarray, mask: np.ndarray, classes) -> float:
    """aAUC: mean ROC-AUC over observed classes that have both labels (NaN if none)."""
    try:
        from .metrics import classification_metrics
    except ImportError:  # pragma: no cover - metrics ships with the library
        return _auc_fallback(y_true, y_score, mask)
    y = np.where(mask, y_true, np.nan)
    return float(classification_metrics(y, y_score, mask, classes).attrs["aAUC"])


@torch.no_grad()
def predict(model, loader, device, *, amp: bool = False, class_index=None):
    """(labels, mask, scores) numpy arrays of a whole loader; ``class_index`` selects the
    model's logit columns matching the dataset's classes. Restores train/eval mode."""
    net = distributed.unwrap(model)
    was_training = net.training
    net.eval()
    queries = net.class_queries()
    ys, ms, ss = [], [], []
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            with hardware.autocast(amp, device):
                logits = net(images, queries=queries)["logits"].float()
            if class_index is not None:
                logits = logits[:, class_index]
            ys.append(batch["labels"].numpy())
            ms.append(batch["mask"].numpy())
            ss.append(logits.cpu().numpy())
    finally:
        net.train(was_training)
    return np.concatenate(ys), np.concatenate(ms), np.concatenate(ss)


def class_index(model_classes: Sequence[str], data_classes: Sequence[str]) -> list[int]:
    """Columns of the model's classes that hold each of ``data_classes``."""
    missing = [c for c in data_classes if c not in model_classes]
    if missing:
        raise ValueError(f"the validation source has classes {missing} the model was not trained "
                         f"on; the model knows {list(model_classes)}")
    return [list(model_classes).index(c) for c in data_classes]


# ---- the trainer ---------------------------------------------------------------------------
_LOSS_OUT_KEYS = ("image_emb", "text_emb", "logits", "gate", "gate_proj")
_LOSS_BATCH_KEYS = ("labels", "mask", "source")


class Trainer:
    """Runs one stage: epochs of optimiser steps, a validation aAUC after each epoch, best and
    last checkpoints in ``out_dir``, and resuming from the last one.

    ``model`` is a :class:`~unichest_lib.model.UniChest` already in ``stage``; ``train_set`` and
    ``val_set`` are :class:`~unichest_lib.samples.MultiSourceDataset` s; ``loss_fn(out, batch,
    cfg)`` returns a dict of terms ending in ``_loss`` plus ``"loss"``.
    """

    def __init__(self, cfg: Config, stage: str, model, train_set, val_set, out_dir, *,
                 loss_fn: Callable | None = None, progress: bool = True,
                 eval_hook: Callable | None = None, run_key: str = "",
                 features=None, text_cache: dict | None = None, features_key: str = ""):
        from . import losses

        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not valid; choose one of {STAGES}")
        self.cfg, self.stage, self.progress, self.eval_hook = cfg, stage, progress, eval_hook
        self.out_dir = pathlib.Path(out_dir)
        self.run_key = run_key
        self.device = distributed.init_from_env(cfg.device) if distributed.launched_by_torchrun() \
            else distributed.resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.net = distributed.wrap(self.model, self.device)
        self.loss_fn = loss_fn or (losses.divide_loss if stage == "divide" else losses.conquer_loss)
        self.train_set, self.val_set = train_set, val_set
        self.train_loader = self._train_loader()
        self.steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        self.epochs = cfg.conquer_epochs if stage == "conquer" else cfg.divide_epochs  # continued:
        # as many epochs (and steps) as the Divide stage, the compute-matched control
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.epochs * self.steps_per_epoch)
        self.aug_generator = torch.Generator()
        self.epoch, self.step = 0, 0
        self.best_metric, self.best_epoch = -math.inf, -1
        self.rows: list[dict] = []
        self._augment = None
        self.features, self.text_cache = features, text_cache
        self.features_key = features_key
        self._val_features = None
        if features is not None and (stage != "divide" or len(train_set) != features.n_rows):
            raise ValueError(f"stored features ({features.n_rows} rows) serve only the Divide stage "
                             f"of the dataset they were encoded from ({len(train_set)} rows here)")

    def _warm_text_cache(self) -> None:
        """Encode every class name and training text once, in a fixed order, when the text
        backbone is frozen. Its pooled features are cached per text, and a feature computed
        inside a padded batch depends (in the last float bits) on the batch's other texts;
        a fixed order makes a resumed run, or any new process, see exactly the features an
        uninterrupted run sees. The class names (the queries) are pooled first, alone and in
        the model's order, exactly as ``UniChest.class_queries`` pools them for a reloaded
        checkpoint: otherwise, under bf16, a checkpoint scored later differs from the
        validation aAUC it was selected by (0.630 against 0.623 was seen at ``tutorial``)."""
        enc = getattr(self.model, "text_encoder", None)
        if enc is None or not getattr(enc, "backbone_frozen", False):
            return
        enc.clear_cache()
        enc.pooled(list(self.model.classes))
        if self.text_cache is not None:  # pooled features shared by runs of one text backbone
            enc.add_cached(self.text_cache)
        enc.pooled(sorted(set(self.train_set.table.texts)))
        if self.text_cache is not None:
            self.text_cache.update(enc.cached())

    def _encode_features(self) -> None:
        """``cfg.divide_on_features``: encode the training split once with the frozen
        encoder (see :mod:`unichest_lib.features`) unless stored features were passed in."""
        if self.stage == "divide" and self.cfg.divide_on_features and self.features is None:
            from . import features

            def make():
                return features.encode(self.model, self.train_set, self.cfg)

            if self.features_key:  # runs from one Conquer checkpoint share one encoding
                self.features = features.shared(self.features_key, make)
            else:
                self.features = make()

    # -- data --------------------------------------------------------------------------
    def _train_loader(self):
        from . import data

        if not distributed.is_distributed():
            return data.make_loader(self.train_set, self.cfg, train=True)
        from torch.utils.data import DataLoader, DistributedSampler

        local = distributed.local_batch_size(self.cfg.batch_size)
        sampler = DistributedSampler(self.train_set, shuffle=True, seed=self.cfg.seed, drop_last=True)
        return DataLoader(self.train_set, batch_size=local, sampler=sampler, drop_last=True,
                          num_workers=self.cfg.num_workers, collate_fn=data.collate)

    def _val_loader(self):
        from . import data

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
        out = {k: v.float() for k, v in out.items() if k in _LOSS_OUT_KEYS}
        batch = {k: batch[k].to(self.device) for k in _LOSS_BATCH_KEYS}
        if distributed.is_distributed():
            out, batch = distributed.gather_batch(out), distributed.gather_batch(batch)
        return self.loss_fn(out, batch, self.cfg)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the loss terms as floats."""
        if self.features is not None:  # Divide on stored frozen patches: no encoder, no augment
            patches = self.features.batch(batch["index"], self.device)
            with hardware.autocast(self.cfg.amp, self.device):
                out = self.net(None, texts=batch["text"], patches=patches,
                               grid=self.features.grid)
        else:
            images = batch["image"].to(self.device, non_blocking=True)
            images = self.augment(images)
            with hardware.autocast(self.cfg.amp, self.device):
                out = self.net(images, texts=batch["text"])
        terms = self.loss_terms(out, batch)
        values = self._check_finite(terms, batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
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
    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train the remaining epochs (all of them unless resuming); returns a TrainResult."""
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
        metrics = self.validate()
        self.epoch = min(self.epoch + 1, max(self.epochs, 1))
        row = dict(stage=self.stage, split="valid", epoch=self.epoch, step=self.step, **metrics)
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
        split too (encoded once; the frozen encoder gives the same patches every epoch)."""
        idx = class_index(self.model.classes, self.val_set.classes)
        if self.features is not None:
            y, m, s = self._predict_val_features(idx)
        else:
            y, m, s = predict(self.model, self._val_loader(), self.device, amp=self.cfg.amp,
                              class_index=idx)
        metrics = {"val_aAUC": macro_auc(y, s, m, self.val_set.classes)}
        if self.eval_hook is not None:
            metrics.update(self.eval_hook(self.model, self.epoch + 1) or {})
        return metrics

    def _predict_val_features(self, idx):
        from . import features

        def make():
            return features.encode(self.model, self.val_set, self.cfg)

        if self._val_features is None:
            self._val_features = (features.shared(f"{self.features_key}:valid", make)
                                  if self.features_key else make())
        vf, net = self._val_features, distributed.unwrap(self.model)
        was_training = net.training
        net.eval()
        chunks = []
        try:
            with torch.no_grad():
                queries = net.class_queries()
                for i in range(0, vf.n_rows, self.cfg.eval_batch_size):
                    rows = torch.arange(i, min(i + self.cfg.eval_batch_size, vf.n_rows))
                    with hardware.autocast(self.cfg.amp, self.device):
                        out = net(None, patches=vf.batch(rows, self.device), grid=vf.grid,
                                  queries=queries)
                    chunks.append(out["logits"].float()[:, idx].cpu())
        finally:
            net.train(was_training)
        t = self.val_set.table
        return (np.nan_to_num(t.labels, nan=0.0), t.mask, torch.cat(chunks).numpy())

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
        self.rows = pd.DataFrame(extra["history"]).to_dict(orient="records")

    def result(self) -> TrainResult:
        return TrainResult(model=self.model, history=self.history(), checkpoint=self.best_path,
                           best_metric=self.best_metric, last_checkpoint=self.last_path,
                           out_dir=self.out_dir)


# ---- the two stages -------------------------------------------------------------------------
def _default_out_dir(cfg: Config, stage: str) -> pathlib.Path:
    from . import store

    return store.artifact_dir(cfg, stage) / "run"


def _datasets(cfg: Config):
    from . import data

    return (data.make_dataset(cfg, cfg.sources, "train"),
            data.make_dataset(cfg, [cfg.val_source], "valid"))


def conquer(cfg: Config, *, progress: bool = True, out_dir=None, resume: bool = False,
            eval_hook: Callable | None = None) -> TrainResult:
    """The Conquer stage (Eq. 4): encoders + QN¹ on the training split of all ``cfg.sources``.

    Checkpoints go to ``out_dir`` (default: the artifact store's run folder); ``resume``
    continues from its "last" checkpoint. ``eval_hook(model, epoch) -> dict`` adds numbers to
    each epoch's validation row. Introduced in ``notebooks/02_conquer.ipynb``.
    """
    from . import store
    from .model import UniChest

    cfg = cfg.validate()
    seed_everything(cfg.seed, cfg.deterministic)
    train_set, val_set = _datasets(cfg)
    model = UniChest(cfg, train_set.classes)
    trainer = Trainer(cfg, "conquer", model, train_set, val_set,
                      out_dir or _default_out_dir(cfg, "conquer"), progress=progress,
                      eval_hook=eval_hook, run_key=store.conquer_key(cfg))
    return trainer.fit(resume=resume)


_TEXT_CACHES: dict[str, dict] = {}


def _text_cache(cfg: Config, given: dict | None) -> dict | None:
    """Pooled text features shared by the Divide runs of this process that use the same
    frozen pretrained text backbone (``cfg.freeze_text``); None when the backbone trains.
    (In Divide, L_BCL is a reported constant, so the last bits of a shared feature cannot
    change what is trained.)"""
    if given is not None or not cfg.freeze_text:
        return given
    return _TEXT_CACHES.setdefault(cfg.text_model, {})


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
    from . import store

    saved = meta["config"]
    now = cfg.to_dict()
    diff = [f"{f}: checkpoint {saved.get(f)!r}, now {now[f]!r}"
            for f in store.conquer_fields() if saved.get(f) != now[f] and f != "seed"]
    if diff:
        warnings.warn("the Conquer checkpoint was trained with other settings than this Divide "
                      "run:\n  " + "\n  ".join(diff), RuntimeWarning, stacklevel=3)


def divide(cfg: Config, *, conquer_checkpoint=None, progress: bool = True, out_dir=None,
           resume: bool = False, eval_hook: Callable | None = None, features=None,
           text_cache: dict | None = None) -> TrainResult:
    """The Divide stage (Eq. 7), from the best Conquer checkpoint (default: the store's, which
    trains it if missing). Encoders are frozen; only the MoE-QN, Φ1 and Φ2 are optimised.

    With ``cfg.divide_on_features`` the steps run on stored frozen patches
    (:mod:`unichest_lib.features`): ``features`` passes ones already encoded from this
    Conquer checkpoint and training split, ``text_cache`` a dict of pooled text features
    shared between runs (both used by the ablations). Introduced in
    ``notebooks/03_divide.ipynb``.
    """
    from . import store
    from .model import UniChest

    cfg = cfg.validate()
    if conquer_checkpoint is None:
        conquer_checkpoint = store.conquer_checkpoint(cfg, progress=progress)
    train_set, val_set = _datasets(cfg)
    meta = checkpoints.read_meta(conquer_checkpoint)
    checkpoints.check_compatible(meta, cfg, train_set.classes)
    _check_conquer_settings(meta, cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    model = UniChest(cfg, train_set.classes)
    init_from_conquer(model, conquer_checkpoint)
    run_key = f"{store.divide_key(cfg)}:{meta['sha256']}"  # this Divide from this Conquer
    features_key = (f"{meta['sha256']}:{train_set.name}:{len(train_set)}:{cfg.image_size}:"
                    f"{cfg.amp}:{cfg.channels_last}")
    trainer = Trainer(cfg, "divide", model, train_set, val_set,
                      out_dir or _default_out_dir(cfg, "divide"), progress=progress,
                      eval_hook=eval_hook, run_key=run_key, features=features,
                      text_cache=_text_cache(cfg, text_cache), features_key=features_key)
    return trainer.fit(resume=resume)


def continue_conquer(cfg: Config, *, conquer_checkpoint, progress: bool = True, out_dir=None,
                     resume: bool = False, eval_hook: Callable | None = None) -> TrainResult:
    """The compute-matched control of Divide: the best Conquer checkpoint trained further with
    Eq. 4 (encoders, text projection and QN¹ all trainable, training-time augmentation) for
    ``cfg.divide_epochs`` epochs, i.e. as many optimiser steps as the Divide stage adds, with
    a fresh warm-up + cosine schedule. If UniChest beats this, its gain is not just more
    training. Introduced in ``notebooks/05_ablations.ipynb``."""
    from . import store

    cfg = cfg.validate()
    meta = checkpoints.read_meta(conquer_checkpoint)
    if meta.get("stage") != "conquer":
        raise checkpoints.CheckpointError(
            f"{conquer_checkpoint} is a {meta.get('stage')!r} checkpoint; the continued run "
            "starts from a Conquer one")
    train_set, val_set = _datasets(cfg)
    checkpoints.check_compatible(meta, cfg, train_set.classes)
    _check_conquer_settings(meta, cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    saved = meta["config"]  # the checkpoint's own Divide-only fields (its expert shapes)
    model = checkpoints.load(conquer_checkpoint, cfg.replace(
        **{f: saved[f] for f in store.DIVIDE_ONLY if f in saved}))
    run_key = f"{store.key(cfg, 'continued')}:{meta['sha256']}"
    trainer = Trainer(cfg, "continued", model, train_set, val_set,
                      out_dir or _default_out_dir(cfg, "continued"), progress=progress,
                      eval_hook=eval_hook, run_key=run_key)
    return trainer.fit(resume=resume)


__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "WarmupCosine", "conquer", "continue_conquer", "divide",
           "init_from_conquer", "macro_auc", "make_optimizer", "make_scheduler", "predict",
           "seed_everything"]
