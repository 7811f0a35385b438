"""Evaluations of a pre-trained model, each returning a tidy table (paper Section IV-E).

- :func:`in_domain` — Table IV: the test split of every pre-training source, each scored on
  its own label space (a subset of the model's classes).
- :func:`zero_shot` — Table V, Figs. 4-6: downstream sources never trained on; classes are
  queried by text, by ``"name"``, by ``"description"`` (:mod:`unichest_lib.descriptions`) or
  ``"mixed"`` (MedKLIP's inference: names for classes the model was trained on,
  descriptions for the others). Each row says whether its class was ``seen`` in training.
- :func:`grounding` — Fig. 7 made measurable: pointing game and IoU/Dice of the
  cross-attention heatmaps against the ground-truth masks of a grounding source.

Every table is long ("tidy"): one row per (source, class, metric) with columns ``source,
split, class, metric, value, seen, model, seed`` plus ``query, defined, n, n_pos``; macro
rows have ``class == "macro"`` and the paper's names (aAUC, aF1, aACC, mAP). Notebooks pivot
them into the paper's tables and plot them; :func:`save_results` writes one next to the
checkpoint.

**Queries.** The query networks' class queries self-attend, so a class's score depends on
the other queries present. Evaluation therefore always runs the model's *own* class list
(as in training) and *adds* a query for each class it does not know (MedKLIP: "treat that as
an added query"); a ``"description"`` query replaces the name of a known class in place.

Inference runs under ``torch.inference_mode()`` with bfloat16 autocast when ``cfg.amp`` and
the device has native bfloat16 (see :func:`autocast`), batched by ``cfg.eval_batch_size``,
and never drops a test sample.

Introduced in ``notebooks/04_evaluation.ipynb``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import descriptions, grounding as G, hardware, metrics
from .config import Config
from .data import make_dataset, make_loader

QUERY_MODES = ("name", "description", "mixed")
#: Columns of every result table, in order.
COLUMNS = ("source", "split", "class", "metric", "value", "seen", "model", "seed", "query",
           "defined", "n", "n_pos")


@dataclass
class Predictions:
    """Probabilities of one dataset: ``probs`` (N, c) float32, ``labels`` (N, c) 0/1,
    ``mask`` (N, c) bool observed, ``classes`` the dataset's classes, ``seconds`` of inference."""

    probs: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    classes: tuple[str, ...]
    seconds: float


# ---- queries --------------------------------------------------------------------------
def query_plan(model_classes: Sequence[str], classes: Sequence[str], by: str = "name"
               ) -> tuple[list[str], list[int]]:
    """The query texts to run and, for each of ``classes``, its column among them.

    The model's own classes come first (by name), so known classes score as in training;
    a class the model does not know is appended; ``by="description"`` replaces every wanted
    class's text by its description, ``"mixed"`` only the unknown ones.
    """
    if by not in QUERY_MODES:
        raise ValueError(f"by = {by!r} is not valid; choose one of {QUERY_MODES}")
    texts = list(model_classes)
    cols = []
    for c in classes:
        known = c in model_classes
        use_desc = by == "description" or (by == "mixed" and not known)
        text = descriptions.describe(c) if use_desc else c
        if known:
            j = list(model_classes).index(c)
            texts[j] = text
        else:
            texts.append(text)
            j = len(texts) - 1
        cols.append(j)
    return texts, cols


def _device(model) -> torch.device:
    return next(model.parameters()).device


def autocast(cfg: Config, device: torch.device):
    """bfloat16 autocast when ``cfg.amp`` and the device computes bfloat16 natively
    (see :mod:`unichest_lib.hardware`)."""
    return hardware.autocast(cfg.amp, device)


def predict(model, dataset, cfg: Config, *, by: str = "name", features=None) -> Predictions:
    """Probabilities σ(logits) of ``model`` for every sample and class of ``dataset``.

    ``features``: the frozen encoder's stored patches of ``dataset``
    (:class:`unichest_lib.features.FrozenFeatures`) for a Divide-stage model, whose encoder
    is frozen: the query networks then read them instead of re-encoding the images (the
    same numbers, since the encoder output is what the query networks see either way)."""
    texts, cols = query_plan(model.classes, dataset.classes, by)
    device = _device(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():  # outside inference mode: the model may cache these queries
        queries = model.class_queries(texts)
    cols_t = torch.as_tensor(cols, device=device)
    chunks, t0 = [], time.perf_counter()
    if features is not None and (features.n_rows != len(dataset) or model.stage != "divide"):
        raise ValueError("stored features serve a Divide-stage model on the dataset they were "
                         f"encoded from ({features.n_rows} rows; the dataset has {len(dataset)})")
    try:
        with torch.inference_mode(), autocast(cfg, device):
            if features is not None:
                for i in range(0, features.n_rows, cfg.eval_batch_size):
                    idx = torch.arange(i, min(i + cfg.eval_batch_size, features.n_rows))
                    out = model(None, patches=features.batch(idx, device), grid=features.grid,
                                queries=queries)
                    chunks.append(torch.sigmoid(out["logits"].float()).index_select(1, cols_t).cpu())
            else:
                for batch in make_loader(dataset, cfg, train=False):
                    out = model(batch["image"].to(device), queries=queries)
                    chunks.append(torch.sigmoid(out["logits"].float()).index_select(1, cols_t).cpu())
    finally:
        model.train(was_training)
    table = dataset.table
    probs = torch.cat(chunks).numpy() if chunks else np.zeros((0, len(cols)), np.float32)
    return Predictions(probs=probs, labels=np.nan_to_num(table.labels, nan=0.0),
                       mask=table.mask, classes=tuple(dataset.classes),
                       seconds=time.perf_counter() - t0)


def score(pred: Predictions, *, source: str, split: str, model_name: str, seed: int,
          query: str, seen: Sequence[str]) -> pd.DataFrame:
    """The tidy metrics table of one :class:`Predictions` (see the module docstring)."""
    per_class = metrics.classification_metrics(pred.labels, pred.probs, pred.mask, pred.classes)
    long = metrics.to_tidy(per_class, source=source, split=split, model=model_name, seed=seed,
                           query=query)
    seen = set(seen)
    long["seen"] = [(c in seen) if c != metrics.MACRO else None for c in long["class"]]
    return long[list(COLUMNS)]


def _model_name(model, name: str | None) -> str:
    return name or f"UniChest ({getattr(model, 'stage', 'model')})"


# ---- Table IV ---------------------------------------------------------------------------
def in_domain(model, cfg: Config, sources: Sequence[str] | None = None, *, split: str = "test",
              model_name: str | None = None) -> pd.DataFrame:
    """Table IV: each pre-training source's ``split`` scored on its own label space."""
    sources = tuple(cfg.sources if sources is None else sources)
    frames = []
    for src in sources:
        ds = make_dataset(cfg, [src], split)
        unknown = [c for c in ds.classes if c not in model.classes]
        if unknown:
            raise ValueError(f"in-domain source {src!r} has classes {unknown} the model was not "
                             "trained on; use zero_shot() for it")
        frames.append(score(predict(model, ds, cfg), source=src, split=split,
                            model_name=_model_name(model, model_name), seed=cfg.seed,
                            query="name", seen=model.classes))
    return pd.concat(frames, ignore_index=True)


# ---- Table V, Figs. 4-6 -----------------------------------------------------------------
def zero_shot(model, cfg: Config, sources: Sequence[str] | None = None, *, by: str = "name",
              split: str = "test", model_name: str | None = None) -> pd.DataFrame:
    """Table V: zero-shot classification of downstream sources, classes queried by text.

    ``sources`` default: ``cfg.downstream`` without ``chestxdet10`` (the paper uses it for
    grounding only). ``seen`` = the class is one of the model's training classes.
    """
    if sources is None:
        sources = tuple(s for s in cfg.downstream if s != "chestxdet10")
    frames = []
    for src in sources:
        ds = make_dataset(cfg, [src], split)
        frames.append(score(predict(model, ds, cfg, by=by), source=src, split=split,
                            model_name=_model_name(model, model_name), seed=cfg.seed,
                            query=by, seen=model.classes))
    return pd.concat(frames, ignore_index=True)


def seen_unseen_means(df: pd.DataFrame, metric: str = "AUC") -> pd.DataFrame:
    """Mean of a per-class ``metric`` over defined seen and unseen classes, per source
    (the summary behind Figs. 5-6)."""
    rows = df[(df["metric"] == metric) & (df["class"] != metrics.MACRO) & df["defined"]]
    out = rows.groupby(["source", "seen"])["value"].agg(["mean", "count"]).reset_index()
    out["seen"] = out["seen"].map({True: "seen", False: "unseen"})
    return out


# ---- Fig. 7, measured ---------------------------------------------------------------------
def grounding_heatmaps(model, images: torch.Tensor, class_names: Sequence[str], cfg: Config,
                       *, by: str = "name") -> torch.Tensor:
    """(B, len(class_names), H, W) heatmaps in [0, 1] for a batch of images (see
    :mod:`unichest_lib.grounding`); experts combined as Eq. 5 combines scores."""
    texts, cols = query_plan(model.classes, class_names, by)
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            queries = model.class_queries(texts)
        with torch.inference_mode(), autocast(cfg, device):
            out = model(images.to(device), queries=queries, return_attention=True)
            heat = G.heatmaps_from_output(out, images.shape[-2:], cfg.lam)
    finally:
        model.train(was_training)
    return heat[:, torch.as_tensor(cols, device=heat.device)].cpu()


def grounding(model, cfg: Config, source: str = "chestxdet10", *, split: str = "test",
              gt: str = "mask", by: str = "name", model_name: str | None = None) -> pd.DataFrame:
    """Pointing game, IoU and Dice of the heatmaps on every positive (image, class) of
    ``source`` with a non-empty ground truth (``gt="mask"``: the lesion mask; ``"box"``:
    its bounding box). Per class and a macro mean over classes with instances."""
    if gt not in ("mask", "box"):
        raise ValueError(f"gt = {gt!r} is not valid; choose 'mask' or 'box'")
    ds = make_dataset(cfg, [source], split, with_masks=True)
    heats, truths, cls_idx = [], [], []
    for batch in make_loader(ds, cfg, train=False):
        region = batch["seg"].bool()
        if gt == "box":
            b, c, h, w = region.shape
            region = G.boxes_to_masks(batch["boxes"].reshape(-1, 4), h, w).view(b, c, h, w)
        keep = (batch["labels"] > 0.5) & batch["mask"] & region.flatten(2).any(-1)
        if not keep.any():
            continue
        heat = grounding_heatmaps(model, batch["image"], ds.classes, cfg, by=by)
        heats.append(heat[keep])
        truths.append(region[keep])
        cls_idx.append(keep.nonzero()[:, 1])
    rows = []
    name = _model_name(model, model_name)
    if heats:
        heats, truths, cls_idx = torch.cat(heats), torch.cat(truths), torch.cat(cls_idx)
    for j, cname in enumerate(ds.classes):
        sel = cls_idx == j if len(heats) else None
        if sel is not None and sel.any():
            s = G.grounding_scores(heats[sel], truths[sel])
        else:
            s = G.grounding_scores(torch.zeros(0, 1, 1), torch.zeros(0, 1, 1, dtype=torch.bool))
        for m in ("pointing_game", "IoU", "Dice", "threshold"):
            rows.append({"class": cname, "metric": m, "value": s[m], "n": s["n"],
                         "defined": s["n"] > 0})
    df = pd.DataFrame(rows)
    defined = df[df["defined"]]
    macro = defined.groupby("metric")["value"].mean()
    for m in ("pointing_game", "IoU", "Dice"):
        rows.append({"class": metrics.MACRO, "metric": m, "value": macro.get(m, float("nan")),
                     "n": int(defined["class"].nunique()), "defined": not defined.empty})
    df = pd.DataFrame(rows)
    df["source"], df["split"], df["model"], df["seed"], df["query"] = source, split, name, cfg.seed, by
    df["seen"] = [(c in model.classes) if c != metrics.MACRO else None for c in df["class"]]
    df["n_pos"] = df["n"]
    return df[list(COLUMNS)]


def grounding_instances(model, cfg: Config, source: str = "chestxdet10", *, split: str = "test",
                        by: str = "name") -> pd.DataFrame:
    """One row per positive (image, class) of ``source`` with a non-empty lesion mask: the
    pointing-game ``hit`` of the model's heatmap, the lesion's ``area`` fraction of the image
    (the hit rate of a uniformly random peak), the ``class`` and the ``patient``."""
    ds = make_dataset(cfg, [source], split, with_masks=True)
    patients = np.asarray(ds.table.patients)
    rows = []
    for batch in make_loader(ds, cfg, train=False):
        region = batch["seg"].bool()
        keep = (batch["labels"] > 0.5) & batch["mask"] & region.flatten(2).any(-1)
        if not keep.any():
            continue
        heat = grounding_heatmaps(model, batch["image"], ds.classes, cfg, by=by)
        b, c = keep.nonzero(as_tuple=True)
        hits = G.pointing_game(heat[b, c], region[b, c])
        area = region[b, c].flatten(1).float().mean(1)
        for i, j, hit, a in zip(b.tolist(), c.tolist(), hits.tolist(), area.tolist()):
            row = int(batch["index"][i])
            rows.append({"class": ds.classes[j], "patient": patients[row], "row": row,
                         "hit": bool(hit), "area": float(a)})
    return pd.DataFrame(rows, columns=["class", "patient", "row", "hit", "area"])


# ---- saving -------------------------------------------------------------------------------
def results_path(checkpoint_path: str | os.PathLike, name: str) -> Path:
    """``<checkpoint>.<name>.csv`` next to the checkpoint (suffix-free or either file)."""
    if not name or any(ch in name for ch in "/\\"):
        raise ValueError(f"results name {name!r} must be a plain non-empty file-name part")
    p = Path(checkpoint_path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(f"{p.name}.{name}.csv")


def save_results(df: pd.DataFrame, checkpoint_path: str | os.PathLike, name: str = "results") -> Path:
    """Write ``df`` as CSV next to the checkpoint, atomically; returns the path."""
    path = results_path(checkpoint_path, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            df.to_csv(f, index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`save_results`."""
    return pd.read_csv(path)


__all__ = ["COLUMNS", "Predictions", "QUERY_MODES", "grounding", "grounding_heatmaps",
           "grounding_instances", "in_domain",
           "autocast", "load_results", "predict", "query_plan", "results_path", "save_results", "score",
           "seen_unseen_means", "zero_shot"]
