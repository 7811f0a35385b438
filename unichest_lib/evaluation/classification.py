"""Classification by a pre-trained model, each evaluation a tidy table (paper Section IV-E).

- :func:`in_domain` — Table IV: the test split of every pre-training source, each scored on
  its own label space (a subset of the model's classes).
- :func:`zero_shot` — Table V, Figs. 4-6: downstream sources never trained on; classes are
  queried by text, by ``"name"``, by ``"description"`` (:mod:`unichest_lib.data.descriptions`),
  ``"mixed"`` (MedKLIP's inference: names for classes the model was trained on,
  descriptions for the others) or ``"ensemble"`` (the mean embedding of each class's
  phrasings, :mod:`unichest_lib.model.query_text`). Each row says whether its class was
  ``seen`` in training.

Grounding (Fig. 7) has its own module, :mod:`.grounding`, with the same table layout.

Every table is long ("tidy"): one row per (source, class, metric) with columns ``source,
split, class, metric, value, seen, model, seed`` plus ``query, defined, n, n_pos``; macro
rows have ``class == "macro"`` and the paper's names (aAUC, aF1, aACC, mAP). Notebooks pivot
them into the paper's tables and plot them; :func:`save_results` writes one next to the
checkpoint.

**Queries.** The query networks' class queries self-attend, so a class's score depends on
the other queries present. Evaluation therefore always runs the model's *own* class list
(as in training, with the queries it was trained with: ``cfg.query_text``) and *adds* a
query for each class it does not know (MedKLIP: "treat that as an added query"); the query
mode decides the text of every class that is scored, replacing a known class's in place.
In-domain scoring queries each class as the model was trained (``by=None``).

Inference runs through :func:`unichest_lib.model.inference.predict_batches` (eval mode,
``torch.inference_mode()``, bfloat16 autocast when ``cfg.amp`` and the device has native
bfloat16), batched by ``cfg.eval_batch_size``, and never drops a test sample.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data import descriptions, make_dataset, make_loader
from ..fileio import atomic_write
from ..model.inference import device_of, evaluating, predict_batches, query_forward
from . import metrics

QUERY_MODES = ("name", "description", "mixed", "ensemble")
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
def query_plan(model_classes: Sequence[str], classes: Sequence[str], by: str = "name",
               own: Sequence | None = None) -> tuple[list, list[int]]:
    """The query entries to run and, for each of ``classes``, its column among them.

    The model's own classes come first, queried by ``own`` (the model's own entries,
    ``UniChest.query_entries``; default their names), so known classes score as in training;
    a class the model does not know is appended. Every wanted class is queried by ``by``:
    its name, its description (``"description"``; ``"mixed"``: only the unknown ones), or
    the tuple of its phrasings (``"ensemble"``, embeddings averaged by :func:`plan_queries`).
    """
    if by not in QUERY_MODES:
        raise ValueError(f"by = {by!r} is not valid; choose one of {QUERY_MODES}")
    texts = list(model_classes if own is None else own)
    if len(texts) != len(model_classes):
        raise ValueError(f"own has {len(texts)} queries for {len(model_classes)} classes")
    cols = []
    for c in classes:
        known = c in model_classes
        use_desc = by == "description" or (by == "mixed" and not known)
        text = (descriptions.variants(c) if by == "ensemble"
                else descriptions.describe(c) if use_desc else c)
        if known:
            j = list(model_classes).index(c)
            texts[j] = text
        else:
            texts.append(text)
            j = len(texts) - 1
        cols.append(j)
    return texts, cols


def own_mode(model) -> str:
    """The query mode a model was trained with (``cfg.query_text``; ``"name"`` if none)."""
    return getattr(getattr(model, "cfg", None), "query_text", "name")


def plan_queries(model, texts: Sequence) -> torch.Tensor:
    """The (c', d) queries of a :func:`query_plan`: ``model.class_queries`` of the texts, or,
    when an entry is a tuple of phrasings, ``model.mean_queries`` (their mean embedding)."""
    if all(isinstance(t, str) for t in texts):
        return model.class_queries(texts)
    return model.mean_queries(texts)


def predict(model, dataset, cfg: Config, *, by: str | None = "name",
            features=None) -> Predictions:
    """Probabilities σ(logits) of ``model`` for every sample and class of ``dataset``;
    ``by=None`` queries each class as the model was trained (:func:`own_mode`).

    ``features``: the frozen encoder's stored patches of ``dataset`` (a
    :class:`~unichest_lib.training.features.FrozenFeatures`) for a Divide-stage model, whose
    encoder is frozen: the query networks then read them instead of re-encoding the images
    (the same numbers: the encoder's output is what the query networks see either way)."""
    by = own_mode(model) if by is None else by
    own = model.query_entries() if hasattr(model, "query_entries") else None
    texts, cols = query_plan(model.classes, dataset.classes, by, own)
    device = device_of(model)
    cols_t = torch.as_tensor(cols, device=device)
    chunks, t0 = [], time.perf_counter()
    if features is not None and (features.n_rows != len(dataset) or model.stage != "divide"):
        raise ValueError("stored features serve a Divide-stage model on the dataset they were "
                         f"encoded from ({features.n_rows} rows; the dataset has {len(dataset)})")
    with evaluating(model):
        with torch.no_grad():  # outside inference mode: the model may cache these queries
            queries = plan_queries(model, texts)
        loader = (make_loader(dataset, cfg, train=False) if features is None
                  else features.batches(cfg.eval_batch_size))
        forward = query_forward(model, queries, None if features is None else features.grid)
        for _, out in predict_batches(model, loader, amp=cfg.amp, device=device, forward=forward):
            chunks.append(torch.sigmoid(out["logits"].float()).index_select(1, cols_t).cpu())
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


def display_name(model, name: str | None = None) -> str:
    """The ``model`` column of a result table: ``name``, else ``UniChest (<stage>)``."""
    return name or f"UniChest ({getattr(model, 'stage', 'model')})"


# ---- Table IV ---------------------------------------------------------------------------
def in_domain(model, cfg: Config, sources: Sequence[str] | None = None, *, split: str = "test",
              model_name: str | None = None) -> pd.DataFrame:
    """Table IV: each pre-training source's ``split`` scored on its own label space, each
    class queried as the model was trained (:func:`own_mode`)."""
    sources = tuple(cfg.sources if sources is None else sources)
    frames = []
    for src in sources:
        ds = make_dataset(cfg, [src], split)
        unknown = [c for c in ds.classes if c not in model.classes]
        if unknown:
            raise ValueError(f"in-domain source {src!r} has classes {unknown} the model was not "
                             "trained on; use zero_shot() for it")
        frames.append(score(predict(model, ds, cfg, by=None), source=src, split=split,
                            model_name=display_name(model, model_name), seed=cfg.seed,
                            query=own_mode(model), seen=model.classes))
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
                            model_name=display_name(model, model_name), seed=cfg.seed,
                            query=by, seen=model.classes))
    return pd.concat(frames, ignore_index=True)


def seen_unseen_means(df: pd.DataFrame, metric: str = "AUC") -> pd.DataFrame:
    """Mean of a per-class ``metric`` over defined seen and unseen classes, per source
    (the summary behind Figs. 5-6)."""
    rows = df[(df["metric"] == metric) & (df["class"] != metrics.MACRO) & df["defined"]]
    out = rows.groupby(["source", "seen"])["value"].agg(["mean", "count"]).reset_index()
    out["seen"] = out["seen"].map({True: "seen", False: "unseen"})
    return out


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
    return atomic_write(results_path(checkpoint_path, name), df.to_csv(index=False))


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`save_results`."""
    return pd.read_csv(path)


__all__ = ["COLUMNS", "Predictions", "QUERY_MODES", "in_domain", "display_name", "load_results",
           "own_mode", "plan_queries", "predict", "query_plan", "results_path", "save_results", "score",
           "seen_unseen_means", "zero_shot"]
