"""Transfer of the pre-trained image encoder to a downstream source (paper Table II): linear
probing and fine-tuning with 1 %, 10 % and 100 % of the source's training data.

- **Linear probe** (MGCA's protocol): the pre-trained image encoder is frozen; the global
  features Ī of every image are computed once and reused for every portion; a logistic
  regression per class (scikit-learn, L2, features standardised) is fitted on the portion.
- **Fine-tune** (MedKLIP / UniChest Table II "FT"): a copy of the image encoder plus a new
  linear head on Ī, all trained with the binary cross-entropy on observed labels of
  :func:`unichest_lib.training.losses.masked_bce_loss` (AdamW, ``cfg.lr``) for a few epochs; the
  pre-trained model itself is left untouched.

Portions are drawn per *label pattern* (the tuple of a row's observed labels), so each pattern
keeps its share and every pattern keeps at least one image (stratified, seeded by
``cfg.seed``); the test split is always used whole. Results are the tidy table of
:mod:`.classification` with extra columns ``protocol``, ``portion`` and ``n_train``.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .. import hardware
from ..config import Config
from ..data import collate, make_dataset, make_loader
from ..model.inference import device_of, pooled_features, predict_batches
from ..training.losses import masked_bce_loss
from . import metrics
from .classification import COLUMNS, display_name

PORTIONS = (0.01, 0.1, 1.0)


def stratified_subset(labels: np.ndarray, portion: float, seed: int) -> np.ndarray:
    """Sorted row indices of a ``portion`` of the rows, drawn per label pattern (NaN = its own
    value): ``ceil(portion * n_pattern)`` rows of each pattern, at least one."""
    if not 0.0 < portion <= 1.0:
        raise ValueError(f"portion = {portion!r} must lie in (0, 1]; e.g. 0.01 for 1 %")
    labels = np.asarray(labels, dtype=np.float64)
    if portion == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    codes = np.where(np.isnan(labels), 2, labels).astype(np.int8)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.ravel()
    order = rng.permutation(len(labels))  # a random order, then the first k of each group
    g_sorted = group[order]
    rank = np.empty(len(labels), dtype=np.int64)
    by_group = np.argsort(g_sorted, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(g_sorted[by_group])) + 1]
    sizes = np.diff(np.r_[starts, len(labels)])
    rank[by_group] = np.arange(len(labels)) - np.repeat(starts, sizes)
    keep_n = np.maximum(1, np.ceil(portion * np.bincount(group))).astype(np.int64)
    return np.sort(order[rank < keep_n[g_sorted]])


# ---- linear probe ----------------------------------------------------------------------------
def logistic_scores(x_tr, y_tr, m_tr, x_te, seed: int) -> np.ndarray:
    """Probabilities (n_test, c) of one logistic regression per class, fitted on its observed
    rows; a class with a single label value in the training rows gets that constant as its
    score (AUC 0.5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    scores = np.empty((len(x_te), y_tr.shape[1]), dtype=np.float64)
    for j in range(y_tr.shape[1]):  # one small model per class
        rows = m_tr[:, j]
        yj = y_tr[rows, j]
        if len(np.unique(yj)) < 2:
            scores[:, j] = yj[0] if len(yj) else 0.5
            continue
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        scores[:, j] = clf.fit(x_tr[rows], yj).predict_proba(x_te)[:, 1]
    return scores


def _tidy(scores, test_table, *, source, protocol, portion, n_train, model_name, cfg):
    y = np.nan_to_num(test_table.labels, nan=0.0)
    per_class = metrics.classification_metrics(y, scores, test_table.mask, test_table.classes)
    long = metrics.to_tidy(per_class, source=source, split="test", model=model_name,
                           seed=cfg.seed, query=protocol)
    long["seen"] = None
    long = long[list(COLUMNS)]
    long["protocol"], long["portion"], long["n_train"] = protocol, portion, n_train
    return long


def probe_scores(model, cfg: Config, train_ds, test_ds, idx=None) -> np.ndarray:
    """Linear-probe probabilities (n_test, c) on frozen Ī: logistic regressions fitted on
    the rows ``idx`` of ``train_ds`` (default all), applied to ``test_ds``."""
    x_tr, x_te = pooled_features(model, train_ds, cfg), pooled_features(model, test_ds, cfg)
    y_tr, m_tr = np.nan_to_num(train_ds.table.labels, nan=0.0), train_ds.table.mask
    idx = np.arange(len(train_ds)) if idx is None else np.asarray(idx)
    return logistic_scores(x_tr[idx], y_tr[idx], m_tr[idx], x_te, cfg.seed)


def linear_probe(model, cfg: Config, source: str = "siim", portions: Sequence[float] = PORTIONS,
                 *, model_name: str | None = None) -> pd.DataFrame:
    """Linear probing on frozen Ī features with each training ``portion`` (MGCA protocol)."""
    train_ds = make_dataset(cfg, [source], "train")
    test_ds = make_dataset(cfg, [source], "test")
    x_tr, x_te = pooled_features(model, train_ds, cfg), pooled_features(model, test_ds, cfg)
    y_tr, m_tr = np.nan_to_num(train_ds.table.labels, nan=0.0), train_ds.table.mask
    name = display_name(model, model_name)
    frames = []
    for p in portions:
        idx = stratified_subset(train_ds.table.labels, p, cfg.seed)
        scores = logistic_scores(x_tr[idx], y_tr[idx], m_tr[idx], x_te, cfg.seed)
        frames.append(_tidy(scores, test_ds.table, source=source, protocol="linear_probe",
                            portion=p, n_train=len(idx), model_name=name, cfg=cfg))
    return pd.concat(frames, ignore_index=True)


# ---- fine-tuning --------------------------------------------------------------------------
class EncoderClassifier(nn.Module):
    """A copy of the pre-trained image encoder + a linear head on Ī: (B,1,H,W) -> (B, c)."""

    def __init__(self, image_encoder: nn.Module, embed_dim: int, n_classes: int):
        super().__init__()
        self.encoder = copy.deepcopy(image_encoder)
        self.encoder.requires_grad_(True)
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches, _ = self.encoder(images)
        return self.head(patches.mean(1))


def _train_classifier(net, dataset, idx, cfg: Config, epochs: int, lr: float) -> None:
    device = device_of(net)
    bs = max(1, min(cfg.batch_size, len(idx)))
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(Subset(dataset, idx.tolist()), batch_size=bs, shuffle=True,
                        generator=gen, collate_fn=collate, num_workers=cfg.num_workers)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    net.train()
    for _ in range(epochs):
        for batch in loader:
            if len(batch["image"]) < 2:  # batch norm needs two images in training mode
                continue
            with hardware.autocast(cfg.amp, device):
                logits = net(batch["image"].to(device))
            loss = masked_bce_loss(logits, batch["labels"].to(device), batch["mask"].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {loss.item()}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _predict_classifier(net, dataset, cfg: Config) -> np.ndarray:
    out = [torch.sigmoid(logits.float()).cpu() for _, logits in
           predict_batches(net, make_loader(dataset, cfg, train=False), amp=cfg.amp)]
    return torch.cat(out).numpy()


def fine_tune_scores(model, cfg: Config, train_ds, test_ds, idx, *, epochs: int = 3,
                     lr: float | None = None) -> np.ndarray:
    """Probabilities (n_test, c) of a copy of ``model``'s image encoder + a new linear head
    (seeded by ``cfg.seed``), fine-tuned on the rows ``idx`` of ``train_ds`` for ``epochs``
    epochs (AdamW, ``lr`` default ``cfg.lr``) and applied to ``test_ds``."""
    if epochs < 1:
        raise ValueError(f"epochs = {epochs!r} must be >= 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = EncoderClassifier(model.image_encoder, cfg.embed_dim, len(train_ds.classes))
    net.to(device_of(model))
    _train_classifier(net, train_ds, np.asarray(idx), cfg, epochs, lr or cfg.lr)
    return _predict_classifier(net, test_ds, cfg)


def fine_tune(model, cfg: Config, source: str = "siim", portions: Sequence[float] = PORTIONS,
              *, epochs: int = 3, lr: float | None = None,
              model_name: str | None = None) -> pd.DataFrame:
    """Fine-tune a copy of the image encoder + a linear head on each training ``portion``
    for ``epochs`` epochs (:func:`fine_tune_scores`); the test split scores it."""
    if epochs < 1:
        raise ValueError(f"epochs = {epochs!r} must be >= 1")
    train_ds = make_dataset(cfg, [source], "train")
    test_ds = make_dataset(cfg, [source], "test")
    name = display_name(model, model_name)
    frames = []
    for p in portions:
        idx = stratified_subset(train_ds.table.labels, p, cfg.seed)
        scores = fine_tune_scores(model, cfg, train_ds, test_ds, idx, epochs=epochs, lr=lr)
        frames.append(_tidy(scores, test_ds.table, source=source, protocol="fine_tune",
                            portion=p, n_train=len(idx), model_name=name, cfg=cfg))
    return pd.concat(frames, ignore_index=True)


__all__ = ["EncoderClassifier", "PORTIONS", "fine_tune", "fine_tune_scores", "linear_probe",
           "logistic_scores", "probe_scores", "stratified_subset"]
