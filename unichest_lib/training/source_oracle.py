"""Specialisation headroom: what knowing each image's source is worth on a Conquer encoder.

On the frozen patches of a trained Conquer checkpoint (the same stored features Divide trains
on, :mod:`.features`) two heads are trained and compared:

* the **shared** head: one query network trained on the rows of every source;
* the **oracle** (``oracle="conditioned"``, the default): the same query network, told each
  image's source: its class queries are shifted by a learned offset per (source, class),
  zero at the start, so it starts as the shared head and can learn a different reading of
  every class for every source (routing is perfect: the source is given, not inferred).

Both start from the Conquer checkpoint's QN¹ (as Divide's QN¹ does) and are trained with
Divide's multi-label loss on observed classes (``cfg.multilabel_loss``), without L_SCL or a
gate, with AdamW and Divide's warm-up + cosine schedule, for ``cfg.divide_epochs`` epochs of
``cfg.batch_size`` rows, on **the same batches in the same order with the same dropout
draws**: the only difference is the source offsets. The oracle's gain over the shared head is
what perfect knowledge of the source wins on this encoder: the headroom that a mixture of
experts routed by source aims at.

``oracle="separate"`` is the first design (issue #14 as written): one head per source, each
trained only on its own source's rows. It is handicapped by data: each head sees a quarter of
the rows, which on a world with an ideal encoder costs about 0.03 AUC and hides a real
source-specific effect (``tests/test_headroom.py`` shows both). Its plan
(:func:`batch_plan`) keeps every source's rows and the total number of steps equal to the
shared head's.

**Same steps, same data** (:func:`batch_plan`): in every epoch each source's training rows are
shuffled and the first ``floor(n_s / B) * B`` kept (the rest dropped, as ``drop_last`` does);
the shared head (and the conditioned oracle) take one step per batch of B of the *union* of
the kept rows, reshuffled (mixed batches, as Divide's); a separate oracle head of source s
takes one step per batch of B of its own. ``cfg.max_steps_per_epoch`` is not applied. Heads
are scored after their last step (no checkpoint selection). Everything is seeded by
``cfg.seed``.

Introduced in ``notebooks/03_divide.ipynb`` (the question Divide answers); measured with
intervals by :mod:`unichest_lib.evidence.headroom`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Mapping

import numpy as np
import torch

from .. import hardware
from ..config import Config
from ..model.encoders import sincos_2d
from . import checkpoints, features, losses
from .distributed import resolve_device
from .optim import make_scheduler


#: The oracle designs of :func:`fit_heads` (module docstring).
ORACLES = ("conditioned", "separate")


class SourceConditioned(torch.nn.Module):
    """A query network told each image's source: the class queries (c, d) of an image of
    source s become ``queries + offset[s]``, with ``offset`` (n_sources, c, d) learned and
    zero at the start."""

    def __init__(self, head: torch.nn.Module, n_sources: int, n_classes: int, dim: int):
        super().__init__()
        self.head = head
        self.offset = torch.nn.Parameter(torch.zeros(n_sources, n_classes, dim))

    def forward(self, queries, patches, pos, sources):
        return self.head(queries + self.offset[sources], patches, pos)


class _OneSource(torch.nn.Module):
    """A :class:`SourceConditioned` head fixed to one source: called like a query network."""

    def __init__(self, conditioned: SourceConditioned, source: int):
        super().__init__()
        self.conditioned, self.source = conditioned, int(source)

    def forward(self, queries, patches, pos):
        src = torch.full((patches.shape[0],), self.source, dtype=torch.long,
                         device=patches.device)
        return self.conditioned(queries, patches, pos, src)


@dataclasses.dataclass
class Heads:
    """The trained heads: ``shared`` and an ``oracle`` head per source index (for the
    conditioned oracle, the one conditioned head fixed to that source), and the number of
    optimiser steps each took (``steps["shared"]``, ``steps["oracle"]`` or, for separate
    heads, ``steps[source index]``)."""

    shared: torch.nn.Module
    oracle: dict[int, torch.nn.Module]
    steps: dict


@dataclasses.dataclass
class SourceHeadroom:
    """Test-split probabilities of one source under the shared head and its oracle head."""

    shared: np.ndarray  # (n, c)
    oracle: np.ndarray  # (n, c)
    labels: np.ndarray  # (n, c) 0/1
    mask: np.ndarray  # (n, c) observed
    classes: tuple[str, ...]


def batch_plan(source_ids, batch_size: int, epochs: int, seed: int
               ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Row indices of every step: shared (T, B) and ``{source index: (T_s, B)}`` with
    ``sum_s T_s == T`` and, epoch by epoch, the same rows in both (module docstring)."""
    src = torch.as_tensor(np.asarray(source_ids), dtype=torch.int64)
    ids = [int(s) for s in torch.unique(src)]
    rows = {s: torch.nonzero(src == s).squeeze(1) for s in ids}
    small = {s: len(r) for s, r in rows.items() if len(r) < batch_size}
    if small:
        raise ValueError(f"source(s) {small} have fewer training rows than one batch of "
                         f"{batch_size}; lower batch_size or add samples")
    g = torch.Generator().manual_seed(int(seed))
    shared, oracle = [], {s: [] for s in ids}
    for _ in range(epochs):
        kept = []
        for s in ids:
            m = len(rows[s]) // batch_size * batch_size
            pick = rows[s][torch.randperm(len(rows[s]), generator=g)[:m]]
            oracle[s].append(pick.view(-1, batch_size))
            kept.append(pick)
        union = torch.cat(kept)
        shared.append(union[torch.randperm(len(union), generator=g)].view(-1, batch_size))
    empty = torch.zeros((0, batch_size), dtype=torch.int64)
    return (torch.cat(shared) if shared else empty,
            {s: torch.cat(v) if v else empty for s, v in oracle.items()})


def train_head(head: torch.nn.Module, queries: torch.Tensor, patches: torch.Tensor,
               pos: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, plan: torch.Tensor,
               cfg: Config, seed: int, sources: torch.Tensor | None = None) -> int:
    """Train ``head`` (a one-network QueryNetworks, or a :class:`SourceConditioned` one given
    the rows' ``sources``) for one step per row of ``plan`` on the stored ``patches`` (all on
    ``head``'s device); returns the number of optimiser steps."""
    device = patches.device
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, cfg, len(plan))
    head.train()
    with torch.random.fork_rng(devices=[]):  # dropout: seeded, the caller's RNG untouched
        torch.manual_seed(seed)
        for idx in plan.to(device):
            with hardware.autocast(cfg.amp, device):
                x = patches.index_select(0, idx)
                scores, _ = (head(queries, x, pos) if sources is None
                             else head(queries, x, pos, sources[idx]))
            loss = losses.multilabel_loss(scores[:, 0], {"labels": labels[idx],
                                                         "mask": mask[idx]}, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return len(plan)


def fit_heads(qn1: torch.nn.Module, queries: torch.Tensor, feats: features.FrozenFeatures,
              labels, mask, source_ids, cfg: Config, device="cpu", *,
              oracle: str = "conditioned") -> Heads:
    """The shared head and the oracle (``oracle``: one of :data:`ORACLES`), each starting as
    a copy of ``qn1``, trained on the stored patches ``feats`` with the rows' ``labels``/
    ``mask`` (n, c) of ``queries`` (c, d) and their ``source_ids`` (n,)."""
    if oracle not in ORACLES:
        raise ValueError(f"oracle = {oracle!r}; choose one of {ORACLES}")
    device = torch.device(device)
    patches = feats.patches.to(device)
    pos = sincos_2d(*feats.grid, patches.shape[-1], device=device)
    y = torch.as_tensor(np.nan_to_num(np.asarray(labels, dtype=np.float32)), device=device)
    m = torch.as_tensor(np.asarray(mask, dtype=bool), device=device)
    src = torch.as_tensor(np.asarray(source_ids), dtype=torch.long, device=device)
    q = queries.detach().to(device)
    shared_plan, oracle_plan = batch_plan(source_ids, cfg.batch_size, cfg.divide_epochs,
                                          cfg.seed)

    def fresh():
        head = copy.deepcopy(qn1).to(device)
        head.requires_grad_(True)
        return head

    shared = fresh()
    steps = {"shared": train_head(shared, q, patches, pos, y, m, shared_plan, cfg, cfg.seed)}
    heads = {}
    if oracle == "conditioned":  # same batches, same order, same dropout draws as shared
        n_src = int(src.max()) + 1 if len(src) else 0
        cond = SourceConditioned(fresh(), n_src, *q.shape).to(device)
        steps["oracle"] = train_head(cond, q, patches, pos, y, m, shared_plan, cfg, cfg.seed,
                                     sources=src)
        heads = {s: _OneSource(cond, s) for s in oracle_plan}
    else:
        for s, plan in oracle_plan.items():  # one head per source (a loop over heads)
            heads[s] = fresh()
            steps[s] = train_head(heads[s], q, patches, pos, y, m, plan, cfg,
                                  cfg.seed * 1_000_003 + 7919 * (s + 1))
    return Heads(shared, heads, steps)


@torch.no_grad()
def predict_head(head: torch.nn.Module, queries: torch.Tensor, feats: features.FrozenFeatures,
                 cfg: Config, columns=None, device="cpu") -> np.ndarray:
    """σ(scores) (n, c') of ``head`` on the stored patches ``feats`` (eval mode), the columns
    ``columns`` of ``queries``' classes (all by default)."""
    device = torch.device(device)
    pos = sincos_2d(*feats.grid, feats.patches.shape[-1], device=device)
    was = head.training
    head.eval()
    out = []
    try:
        for batch in feats.batches(cfg.eval_batch_size):
            with torch.inference_mode(), hardware.autocast(cfg.amp, device):
                s, _ = head(queries.to(device), batch["image"].to(device), pos)
            out.append(torch.sigmoid(s[:, 0].float()).cpu())
    finally:
        head.train(was)
    probs = torch.cat(out).numpy() if out else np.zeros((0, len(queries)), np.float32)
    return probs if columns is None else probs[:, list(columns)]


def source_headroom(model, cfg: Config, train_set, train_feats: features.FrozenFeatures,
                    tests: Mapping[str, tuple]) -> tuple[dict[str, SourceHeadroom], Heads]:
    """Train the heads from a Divide-stage ``model`` (its QN¹ and class queries) on the stored
    patches of ``train_set`` and score ``tests`` ({source: (dataset, its FrozenFeatures)}).
    The model itself (encoders, QN¹) is not changed."""
    device = next(model.parameters()).device
    if model.stage != "divide":
        raise ValueError("the heads train on a frozen encoder: pass a Divide-stage model "
                         "(stages.init_from_conquer)")
    with torch.no_grad():
        queries = model.class_queries().detach().clone()
    t = train_set.table
    heads = fit_heads(model.qn1, queries, train_feats, t.labels, t.mask, t.source_ids, cfg,
                      device)
    out = {}
    for name, (ds, feats) in tests.items():
        cols = [list(model.classes).index(c) for c in ds.classes]
        oracle = heads.oracle[list(train_set.sources).index(name)]
        out[name] = SourceHeadroom(
            shared=predict_head(heads.shared, queries, feats, cfg, cols, device),
            oracle=predict_head(oracle, queries, feats, cfg, cols, device),
            labels=np.nan_to_num(ds.table.labels, nan=0.0), mask=ds.table.mask,
            classes=tuple(ds.classes))
    return out, heads


def headroom_predictions(cfg: Config, conquer_checkpoint, *, split: str = "test"
                         ) -> dict[str, SourceHeadroom]:
    """The shared and oracle heads' probabilities on the ``split`` of every source in
    ``cfg.sources``, trained on the stored frozen patches of the Conquer checkpoint at
    ``conquer_checkpoint`` (training split of ``cfg.sources``; the same stored features as
    Divide's, :func:`.features.shared`)."""
    from ..data import make_dataset
    from ..model import UniChest
    from .stages import init_from_conquer

    cfg = cfg.validate()
    train_set = make_dataset(cfg, cfg.sources, "train")
    meta = checkpoints.read_meta(conquer_checkpoint)
    checkpoints.check_compatible(meta, cfg, train_set.classes)
    model = UniChest(cfg, train_set.classes)
    init_from_conquer(model, conquer_checkpoint)  # stage "divide": both encoders frozen
    model.to(resolve_device(cfg.device))

    def stored(ds):
        return features.frozen_patches(model, ds, cfg, meta["sha256"])

    tests = {}
    for s in cfg.sources:
        ds = make_dataset(cfg, [s], split)
        tests[s] = (ds, stored(ds))
    return source_headroom(model, cfg, train_set, stored(train_set), tests)[0]


__all__ = ["ORACLES", "Heads", "SourceConditioned", "SourceHeadroom", "batch_plan", "fit_heads",
           "headroom_predictions", "predict_head", "source_headroom", "train_head"]
