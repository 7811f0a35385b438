"""Transfer of the pre-trained image encoder to a downstream source (paper Table II): linear
probing and fine-tuning with 1 %, 10 % and 100 % of the source's training data.

- **Linear probe** (MGCA's protocol): the pre-trained image encoder is frozen; a feature of
  every image (:func:`probe_features`: by default the backbone's own globally pooled feature,
  which MGCA's probe reads, or Ī, the mean of the projected patches) is computed once and
  reused for every portion; a logistic regression per class (scikit-learn, L2, features
  standardised) is fitted on the portion, its C chosen on the portion's own rows by an inner
  patient-disjoint split (:func:`choose_c`; too few rows for one: :data:`FALLBACK_C`). With a
  few labelled images the probe is only as good as the feature's geometry lets it be:
  :func:`feature_geometry` measures how many directions carry its variance (issue #32).
- **Fine-tune** (MedKLIP / UniChest Table II "FT"): a copy of the image encoder plus a new
  linear head on Ī, all trained with the binary cross-entropy on observed labels of
  :func:`unichest_lib.training.losses.masked_bce_loss` (AdamW, ``cfg.lr``) for a few epochs; the
  pre-trained model itself is left untouched.

Portions are drawn per *label pattern* (the tuple of a row's observed labels), so each pattern
keeps its share and every pattern keeps at least one image (stratified, seeded by
``cfg.seed`` or by any seed numpy accepts, e.g. ``(seed, subset)``); the test split is always
used whole. Results are the tidy table of
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
from ..model.inference import device_of, encoded_batches, pooled_features, predict_batches
from ..training.losses import masked_bce_loss
from . import metrics
from .classification import COLUMNS, display_name

PORTIONS = (0.01, 0.1, 1.0)


def stratified_subset(labels: np.ndarray, portion: float, seed) -> np.ndarray:
    """Sorted row indices of a ``portion`` of the rows, drawn per label pattern (NaN = its own
    value): ``ceil(portion * n_pattern)`` rows of each pattern, at least one; ``seed`` is an int
    or a sequence of ints (e.g. ``(training seed, subset)``)."""
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
#: What the linear probe can read from the frozen encoder: ``"backbone"``, the ResNet's own
#: globally pooled feature map (the input of the 1x1 projection; MGCA's probe reads this one,
#: width 512 for ResNet-18), or ``"projected"``, Ī of Eq. 1 (the mean of the projected
#: patches, width d), a linear map of the first.
FEATURES = ("backbone", "projected")
#: The inverse L2 strengths the probe chooses from (:func:`choose_c`).
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: Folds of the inner, patient-disjoint split that chooses C (fewer when a label has fewer
#: patients).
INNER_FOLDS = 5
#: C when the training rows are too few for an inner split (under 2 patients of each label):
#: the middle of :data:`C_GRID`; ``scikit-learn``'s default is 1.
FALLBACK_C = 1e-1


def probe_features(model, dataset, cfg: Config, feature: str = "backbone") -> np.ndarray:
    """(N, width) frozen features of every image of ``dataset`` for the linear probe:
    ``feature`` ``"projected"`` is Ī (:func:`~unichest_lib.model.inference.pooled_features`);
    ``"backbone"`` is the spatial mean of the feature map that enters the encoder's 1x1
    projection ``proj`` (read by a hook in the same forward pass, so nothing is recomputed)."""
    if feature not in FEATURES:
        raise ValueError(f"feature = {feature!r}; choose one of {FEATURES}")
    if feature == "projected":
        return pooled_features(model, dataset, cfg)
    grabbed: list[torch.Tensor] = []
    hook = model.image_encoder.proj.register_forward_pre_hook(
        lambda module, args: grabbed.append(args[0].float().mean((2, 3)).cpu()))
    try:
        for _ in encoded_batches(model, dataset, cfg):
            pass
    finally:
        hook.remove()
    return torch.cat(grabbed).numpy()


def inner_folds(y: np.ndarray, groups, seed: int, k: int = INNER_FOLDS) -> list:
    """(train rows, held-out rows) of a patient-disjoint, label-stratified k-fold split of
    the rows (``groups`` = patients), ``k`` lowered to the patients of the rarer label;
    folds whose training rows hold one label are dropped. Empty when fewer than 2 patients
    carry each label (no split can train and test)."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).ravel()
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    per_label = [len(np.unique(groups[y == v])) for v in (0, 1)]
    k = min(k, *per_label)
    if k < 2:
        return []
    split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(a, b) for a, b in split.split(np.zeros(len(y)), y, groups)
            if len(np.unique(y[a])) == 2]


def _fit(x, y, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x, y)


def choose_c(x: np.ndarray, y: np.ndarray, groups=None, *, seed: int = 0,
             grid: Sequence[float] = C_GRID) -> tuple[float, dict]:
    """(C, {C: inner AUC}) for one class: each C of ``grid`` is fitted on the training part
    of every :func:`inner_folds` fold (standardised on that part alone) and scores its
    held-out part; the AUC of all held-out scores together picks C (ties: the smaller C,
    stronger regularisation). Only the rows passed in are used. Without an inner split:
    (:data:`FALLBACK_C`, {})."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    folds = inner_folds(y, groups, seed)
    if not folds:
        return FALLBACK_C, {}
    held = np.concatenate([b for _, b in folds])
    curve = {}
    for c in grid:
        out = np.empty(len(y))
        for a, b in folds:
            scaler = StandardScaler().fit(x[a])
            out[b] = _fit(scaler.transform(x[a]), y[a], c, seed).decision_function(
                scaler.transform(x[b]))
        curve[float(c)] = float(roc_auc_score(y[held], out[held]))
    best = max(curve.values())
    return min(c for c, v in curve.items() if v >= best - 1e-12), curve


def logistic_scores(x_tr, y_tr, m_tr, x_te, seed: int, *, groups=None,
                    c: float | None = None, chosen: dict | None = None) -> np.ndarray:
    """Probabilities (n_test, c) of one L2 logistic regression per class on standardised
    features, fitted on its observed training rows with C chosen by :func:`choose_c` on
    those rows alone (``groups``: their patients), or ``c`` when given; ``chosen`` (a dict),
    when passed, receives each class's C. A class with a single label value in the training
    rows gets that constant as its score (AUC 0.5)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    groups = np.arange(len(x_tr)) if groups is None else np.asarray(groups)
    scores = np.empty((len(x_te), y_tr.shape[1]), dtype=np.float64)
    for j in range(y_tr.shape[1]):  # one small model per class
        rows = m_tr[:, j]
        yj = y_tr[rows, j]
        if len(np.unique(yj)) < 2:
            scores[:, j] = yj[0] if len(yj) else 0.5
            continue
        cj = choose_c(x_tr[rows], yj, groups[rows], seed=seed)[0] if c is None else c
        if chosen is not None:
            chosen[j] = cj
        scores[:, j] = _fit(x_tr[rows], yj, cj, seed).predict_proba(x_te)[:, 1]
    return scores


def feature_geometry(x: np.ndarray, i_bar: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """How the frozen features (rows = images) spread: ``participation_ratio`` (Σλ)² / Σλ²
    of the covariance eigenvalues λ of ``x`` (1 when one direction holds all the variance,
    the width when all hold the same), ``top_share`` λ_max / Σλ, and ``span_share``, the
    share of the centred ``i_bar``'s (Ī, (n, d)) squared norm inside the span of the rows
    of ``queries`` (text embeddings (c, d); a random r-dimensional subspace holds r / d)."""
    lam = np.clip(np.linalg.eigvalsh(np.cov(np.asarray(x, np.float64), rowvar=False)), 0, None)
    centred = i_bar - i_bar.mean(0)
    u, s, _ = np.linalg.svd(np.asarray(queries, np.float64).T, full_matrices=False)
    u = u[:, s > s.max() * 1e-6]  # an orthonormal basis of the queries' span, (d, r)
    return dict(participation_ratio=float(lam.sum() ** 2 / (lam ** 2).sum()),
                top_share=float(lam.max() / lam.sum()),
                span_share=float(((centred @ u) ** 2).sum() / (centred ** 2).sum()))


def _tidy(scores, test_table, *, source, protocol, portion, n_train, model_name, cfg):
    y = np.nan_to_num(test_table.labels, nan=0.0)
    per_class = metrics.classification_metrics(y, scores, test_table.mask, test_table.classes)
    long = metrics.to_tidy(per_class, source=source, split="test", model=model_name,
                           seed=cfg.seed, query=protocol)
    long["seen"] = None
    long = long[list(COLUMNS)]
    long["protocol"], long["portion"], long["n_train"] = protocol, portion, n_train
    return long


def probe_scores(model, cfg: Config, train_ds, test_ds, idx=None, *,
                 feature: str = "backbone") -> np.ndarray:
    """Linear-probe probabilities (n_test, c) on a frozen ``feature``
    (:func:`probe_features`): logistic regressions fitted on the rows ``idx`` of
    ``train_ds`` (default all), C chosen on those rows, applied to ``test_ds``."""
    x_tr, x_te = (probe_features(model, ds, cfg, feature) for ds in (train_ds, test_ds))
    y_tr, m_tr = np.nan_to_num(train_ds.table.labels, nan=0.0), train_ds.table.mask
    idx = np.arange(len(train_ds)) if idx is None else np.asarray(idx)
    groups = np.asarray(train_ds.table.patients)[idx]
    return logistic_scores(x_tr[idx], y_tr[idx], m_tr[idx], x_te, cfg.seed, groups=groups)


def linear_probe(model, cfg: Config, source: str = "siim", portions: Sequence[float] = PORTIONS,
                 *, feature: str = "backbone", model_name: str | None = None) -> pd.DataFrame:
    """Linear probing on a frozen ``feature`` with each training ``portion`` (MGCA protocol)."""
    train_ds = make_dataset(cfg, [source], "train")
    test_ds = make_dataset(cfg, [source], "test")
    x_tr, x_te = (probe_features(model, ds, cfg, feature) for ds in (train_ds, test_ds))
    y_tr, m_tr = np.nan_to_num(train_ds.table.labels, nan=0.0), train_ds.table.mask
    patients = np.asarray(train_ds.table.patients)
    name = display_name(model, model_name)
    frames = []
    for p in portions:
        idx = stratified_subset(train_ds.table.labels, p, cfg.seed)
        scores = logistic_scores(x_tr[idx], y_tr[idx], m_tr[idx], x_te, cfg.seed,
                                 groups=patients[idx])
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


__all__ = ["C_GRID", "EncoderClassifier", "FALLBACK_C", "FEATURES", "INNER_FOLDS", "PORTIONS",
           "choose_c", "feature_geometry", "fine_tune", "fine_tune_scores", "inner_folds",
           "linear_probe", "logistic_scores", "probe_features", "probe_scores",
           "stratified_subset"]
