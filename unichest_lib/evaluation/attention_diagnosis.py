"""Why the attention does (not) point at the lesion: where the query networks' cross-attention
goes, per network, decoder layer and head, measured on every lesion of a grounding source.

The grounding heatmap of :mod:`.grounding` is the cross-attention averaged over layers and
heads and mixed over the networks as Eq. 5 mixes scores. Averages can hide a head that does
point; so :func:`per_head_attention` records every cross-attention call's weights *per head*
(the model computes them, this module only keeps them), and :func:`lesion_attention` scores
each (lesion, network, layer, head) map, and the mixed map the pointing game reads, by

- **entropy**: the map's entropy over the h × w patches divided by log(h·w): 1 is uniform
  (the query reads every patch alike), 0 is one patch;
- **lesion mass**: the attention that falls on the lesion, each patch weighted by the share of
  its pixels inside the lesion mask, next to **lesion share**, the lesion's share of the image
  (the mass a uniform map gives it). **lift** = mass / share: 1 is what a uniform map gets,
  above 1 the map leans on the lesion, below 1 it avoids it;
- **peak in lesion**: the patch of maximum attention overlaps the lesion (a patch-level
  pointing game, before upsampling).

:func:`global_statistics_auc` asks the other half of the question: can the finding be read
from the image's grey-level histogram alone (no position at all)? Where it can, a classifier
needs no localisation, and nothing in the classification loss asks the attention to find the
lesion.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import Config
from ..data import make_dataset, make_loader
from ..model.inference import evaluating, predict_batches
from .classification import plan_queries, query_plan
from .grounding import combine_attention, normalise, pointing_game, upsample

#: Bins of the grey-level histogram of :func:`histogram_features` (images are in [0, 1]).
HIST_BINS = 16


@contextlib.contextmanager
def per_head_attention():
    """While active, every cross-attention the query networks compute with weights is also
    kept per head: yields a list that receives one (E, B, heads, Lq, Lk) float32 tensor per
    decoder-layer call, in the order the model makes them (QN1's layers, then the experts')."""
    from ..model import query

    original = query.attend
    calls: list[torch.Tensor] = []

    def recording(q, k, v, n_heads, *, dropout_p=0.0, need_weights=False):
        out = original(q, k, v, n_heads, dropout_p=dropout_p, need_weights=need_weights)
        if need_weights:  # the same softmax as query.attend, kept before the mean over heads
            e, b, lq, d = q.shape
            dh = d // n_heads
            qh = q.float().reshape(e, b, lq, n_heads, dh).transpose(2, 3)
            kh = k.float().reshape(e, b, k.shape[2], n_heads, dh).transpose(2, 3)
            with torch.autocast(q.device.type, enabled=False):  # kept in float32
                calls.append(torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(dh), -1))
        return out

    query.attend = recording
    try:
        yield calls
    finally:
        query.attend = original


def _networks(calls: list[torch.Tensor], n_layers: int) -> torch.Tensor:
    """(B, networks, layers, heads, Lq, Lk) from the recorded calls of one forward pass."""
    groups = [calls[i:i + n_layers] for i in range(0, len(calls), n_layers)]
    per_group = [torch.stack(g, dim=2) for g in groups]  # (E, B, L, H, Lq, Lk)
    return torch.cat(per_group, dim=0).permute(1, 0, 2, 3, 4, 5)


def _lesion_batches(model, cfg: Config, ds, by: str):
    """The batches of ``ds`` (with masks) that hold a positive (image, class) with a non-empty
    lesion mask, each as a namespace: ``batch``, ``region`` (B, c, S, S) bool, ``keep``
    (B, c) the lesions, ``start`` (row of its first image), and the ``queries`` / ``cols`` /
    ``n_layers`` of the model, which is in evaluation mode meanwhile."""
    from types import SimpleNamespace

    own = model.query_entries() if hasattr(model, "query_entries") else None
    texts, cols = query_plan(model.classes, ds.classes, by, own)
    n_layers, start = _decoder_layers(model), 0
    with evaluating(model):
        with torch.no_grad():
            queries = plan_queries(model, texts)
        for batch in make_loader(ds, cfg, train=False):
            region = batch["seg"].bool()
            keep = (batch["labels"] > 0.5) & batch["mask"] & region.flatten(2).any(-1)
            if keep.any():
                yield SimpleNamespace(batch=batch, region=region, keep=keep, start=start,
                                      queries=queries, cols=cols, n_layers=n_layers)
            start += len(batch["image"])


def _decoder_layers(model) -> int:
    """Decoder layers of the model's query networks (UniChest's QN1 and experts, or a
    baseline's single decoder: all of one depth)."""
    from ..model.query import QueryNetworks

    depths = {len(m.layers) for m in model.modules() if isinstance(m, QueryNetworks)}
    if len(depths) != 1:
        raise ValueError(f"expected query networks of one depth, found depths {sorted(depths)}")
    return depths.pop()


def map_scores(maps: torch.Tensor, lesion_frac: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy (normalised), lesion mass, lift and peak-in-lesion of attention ``maps``
    (..., N) summing to 1 over N patches, against ``lesion_frac`` (..., N): each patch's share
    of lesion pixels (broadcast against ``maps``)."""
    n = maps.shape[-1]
    p = maps.clamp_min(1e-12)
    entropy = -(p * p.log()).sum(-1) / math.log(n)
    mass = (maps * lesion_frac).sum(-1)
    share = lesion_frac.mean(-1).expand_as(mass)
    peak = maps.argmax(-1, keepdim=True)
    in_lesion = torch.gather(lesion_frac.expand_as(maps), -1, peak).squeeze(-1) > 0
    return {"entropy": entropy, "lesion_mass": mass, "lesion_share": share,
            "lift": mass / share, "peak_in_lesion": in_lesion.float()}


def lesion_attention(model, cfg: Config, source: str = "chestxdet10", split: str = "test",
                     *, by: str = "name") -> pd.DataFrame:
    """One row per (lesion, map): ``network`` 1..E (QN1 first), ``layer`` and ``head`` of
    every cross-attention map, and ``network == "mixed"`` (layer and head -1) for the map the
    pointing game reads (layers and heads averaged, networks mixed by Eq. 5); with the lesion's
    ``row``, ``class`` and the scores of :func:`map_scores`."""
    ds = make_dataset(cfg, [source], split, with_masks=True)
    frames = [_batch_rows(model, cfg, b.batch, b.queries, b.cols, b.keep, b.n_layers, b.start,
                          ds.classes)
              for b in _lesion_batches(model, cfg, ds, by)]
    if not frames:
        return pd.DataFrame(columns=["row", "class", "network", "layer", "head", "entropy",
                                     "lesion_mass", "lesion_share", "lift", "peak_in_lesion"])
    return pd.concat(frames, ignore_index=True)


def _kept_heads(model, cfg, batch, queries, cols, keep, n_layers):
    """One forward pass of ``batch``: the model output and the per-head maps (n, E, L, H, N)
    of the kept (image, class) pairs ``keep.nonzero()``."""
    with per_head_attention() as calls:
        [(_, out)] = predict_batches(model, [{"image": batch["image"]}], amp=cfg.amp,
                                     forward=lambda x: model(x, queries=queries,
                                                             return_attention=True))
    heads = _networks(calls, n_layers)[:, :, :, :, cols]  # (B, E, L, H, c, N)
    b_idx, c_idx = keep.nonzero(as_tuple=True)
    return out, heads[b_idx, :, :, :, c_idx]


def _batch_rows(model, cfg, batch, queries, cols, keep, n_layers, start, classes):
    out, per = _kept_heads(model, cfg, batch, queries, cols, keep, n_layers)
    h, w = out["attention"].shape[-2:]
    mixed = combine_attention(out["attention"].float()[:, :, cols], out.get("gate"), cfg.lam)
    b_idx, c_idx = keep.nonzero(as_tuple=True)
    region = batch["seg"][b_idx, c_idx].float()[:, None]  # (n, 1, S, S)
    frac = F.adaptive_avg_pool2d(region, (h, w)).flatten(1)  # (n, N)
    s_heads = map_scores(per, frac[:, None, None, None])
    mix = mixed[b_idx, c_idx].flatten(1)
    s_mix = map_scores(mix / mix.sum(-1, keepdim=True), frac)
    n, e, l, hh = per.shape[:4]
    net, lay, head = np.meshgrid(np.arange(1, e + 1), np.arange(l), np.arange(hh), indexing="ij")
    rows = pd.DataFrame({"row": np.repeat(start + b_idx.numpy(), e * l * hh),
                         "class": np.repeat([classes[int(j)] for j in c_idx], e * l * hh),
                         "network": np.tile(net.ravel().astype(str), n),
                         "layer": np.tile(lay.ravel(), n), "head": np.tile(head.ravel(), n),
                         **{k: v.reshape(-1).numpy() for k, v in s_heads.items()}})
    mixed_rows = pd.DataFrame({"row": start + b_idx.numpy(),
                               "class": [classes[int(j)] for j in c_idx], "network": "mixed",
                               "layer": -1, "head": -1,
                               **{k: v.numpy() for k, v in s_mix.items()}})
    return pd.concat([rows, mixed_rows], ignore_index=True)


def _head_maps(model, cfg, batch, queries, cols, keep, n_layers) -> torch.Tensor:
    """(n, E, L, H, S, S) heatmaps of every single head for the kept (image, class) pairs,
    upsampled and min-max normalised as the mixed map is (:mod:`.grounding`)."""
    out, per = _kept_heads(model, cfg, batch, queries, cols, keep, n_layers)
    per = per.reshape(*per.shape[:4], *out["attention"].shape[-2:])
    return normalise(upsample(per, batch["image"].shape[-2:]))


def head_split_scores(model, cfg: Config, source: str = "chestxdet10", split: str = "test",
                      *, by: str = "name", only=None, dice: bool = True
                      ) -> tuple[pd.DataFrame, dict]:
    """Every single head's grounding on every positive (image, class) of ``source``'s
    ``split`` with a non-empty lesion mask, scored as the mixed map is: the lesions
    (``class``, ``patient``, ``row``, in the order of
    :func:`~.grounding_references.split_scores`) and {(network, layer, head): its
    :func:`~.grounding_references.lesion_scores` (``hit``, ``iou``, ``dice``)}; ``network`` 1
    is QN1, then the experts, as in :func:`lesion_attention`. ``only``: score these heads
    alone; ``dice=False``: the pointing game only (``iou`` and ``dice`` left out: the
    threshold curves are most of the cost)."""
    from .grounding_references import lesion_scores

    ds = make_dataset(cfg, [source], split, with_masks=True)
    patients = np.asarray(ds.table.patients)
    rows, parts = [], {}
    for lb in _lesion_batches(model, cfg, ds, by):
        maps = _head_maps(model, cfg, lb.batch, lb.queries, lb.cols, lb.keep, lb.n_layers)
        b, c = lb.keep.nonzero(as_tuple=True)
        gt = lb.region[b, c]
        e, l, hh = maps.shape[1:4]
        for key in np.ndindex(e, l, hh):
            name = (key[0] + 1, key[1], key[2])
            if only is not None and name not in only:
                continue
            heat = maps[:, key[0], key[1], key[2]]
            parts.setdefault(name, []).append(
                lesion_scores(heat, gt) if dice
                else {"hit": pointing_game(heat, gt).double().numpy()})
        for i, j in zip(b.tolist(), c.tolist()):
            row = int(lb.batch["index"][i])
            rows.append({"class": ds.classes[j], "patient": patients[row], "row": row})
    scores = {k: {m: np.concatenate([p[m] for p in ps]) for m in ps[0]}
              for k, ps in parts.items()}
    return pd.DataFrame(rows, columns=["class", "patient", "row"]), scores


def summarise_maps(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Means of :func:`lesion_attention`'s scores grouped by ``by``, with ``lift`` recomputed
    as mean mass / mean share (a ratio of means: small lesions do not dominate it) and ``n``
    lesions."""
    g = rows.groupby(by, sort=False)
    out = g[["entropy", "lesion_mass", "lesion_share", "peak_in_lesion"]].mean()
    out["lift"] = out["lesion_mass"] / out["lesion_share"]
    out["n"] = g.size()
    return out.reset_index()


# ---- can the finding be read without looking anywhere in particular? ------------------------
def histogram_features(images: torch.Tensor, bins: int = HIST_BINS) -> np.ndarray:
    """(B, bins + 2) position-free features of (B, 1, H, W) images in [0, 1]: the grey-level
    histogram (shares of pixels per bin), the mean and the standard deviation."""
    x = images.flatten(1).float().clamp(0, 1)
    idx = (x * bins).long().clamp_max(bins - 1)
    hist = torch.zeros(x.shape[0], bins).scatter_add_(1, idx, torch.ones_like(x)) / x.shape[1]
    return torch.cat([hist, x.mean(1, keepdim=True), x.std(1, keepdim=True)], 1).numpy()


def _features(cfg: Config, source: str, split: str):
    ds = make_dataset(cfg, [source], split)
    feats = [histogram_features(b["image"]) for b in make_loader(ds, cfg, train=False)]
    return np.concatenate(feats), ds


def global_statistics_scores(cfg: Config, source: str = "chestxdet10", *,
                             c_grid=(0.01, 0.1, 1.0, 10.0)) -> tuple[np.ndarray, object]:
    """Test probabilities (n, c) of one logistic regression per class on
    :func:`histogram_features`, its C chosen from ``c_grid`` by validation AUC (fitted on the
    training split only), and the test dataset. A class with one label value in training or
    validation gets a constant score."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    (x_tr, tr), (x_va, va), (x_te, te) = (_features(cfg, source, s)
                                          for s in ("train", "valid", "test"))
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_va, x_te = (scaler.transform(x) for x in (x_tr, x_va, x_te))
    probs = np.full((len(te), len(te.classes)), 0.5)
    for j in range(len(te.classes)):
        m_tr, m_va = tr.table.mask[:, j], va.table.mask[:, j]
        y_tr, y_va = tr.table.labels[m_tr, j], va.table.labels[m_va, j]
        if len(np.unique(y_tr)) < 2:
            continue
        fits = [LogisticRegression(C=c, max_iter=2000).fit(x_tr[m_tr], y_tr) for c in c_grid]
        if len(np.unique(y_va)) == 2:
            best = max(fits, key=lambda f: roc_auc_score(y_va, f.predict_proba(x_va[m_va])[:, 1]))
        else:  # no validation contrast: the middle of the grid
            best = fits[len(fits) // 2]
        probs[:, j] = best.predict_proba(x_te)[:, 1]
    return probs, te


__all__ = ["HIST_BINS", "global_statistics_scores", "head_split_scores", "histogram_features",
           "lesion_attention",
           "map_scores", "per_head_attention", "summarise_maps"]
