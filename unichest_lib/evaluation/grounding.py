"""Lesion grounding from the query networks' cross-attention (paper Section IV-E3, Fig. 7),
scored as MedKLIP does (MedKLIP Section 4.5): pointing game, and IoU / Dice at the best
threshold.

A query network's cross-attention from a class query to the patch grid says where the model
looked for that class. The model returns it averaged over decoder layers and heads
(``out["attention"]``, shape (B, K_active, c, h, w)). Here it becomes a heatmap per image and
class: the experts are combined the way Eq. 5 combines their scores,

    A^All = lam * A^1 + (1 - lam) * sum_{k>=2} omega^k A^k,

(in the Conquer stage there is one query network, so A^All = A^1), upsampled bilinearly to the
image size and min-max normalised to [0, 1] per map.

Scores, per (image, class) with a non-empty ground-truth region:

- **pointing game**: hit when the pixel of maximum heat lies inside the ground-truth mask;
  on ties (a plateau), the tied pixel nearest the plateau's centroid (:func:`peak`);
- **IoU / Dice at the best threshold**: the heatmap is binarised at thresholds 0, 0.01, ..., 1
  (MedKLIP's search) and mean IoU and Dice are reported at one threshold. MedKLIP keeps the
  threshold that maximises the mean Dice of the instances it scores; here it is chosen on the
  validation split and applied to the test split (:func:`grounding_table`), so a test score
  is not tuned on the test lesions.

:func:`grounding_table` scores a model on a grounding source (one row per class and score,
the layout of :mod:`.classification`), :func:`grounding_instances` lists every lesion with its
pointing-game hit, and :func:`grounding_heatmaps` gives the heatmaps of a batch of images. The
overlay of a heatmap on its radiograph is drawn by :func:`unichest_lib.book.figures.
overlay_rgb`.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import Config
from ..data import make_dataset, make_loader
from ..model.inference import evaluating, predict_batches
from . import metrics
from .classification import COLUMNS, display_name, plan_queries, query_plan

#: MedKLIP's threshold search grid for zero-shot segmentation (step 0.01).
THRESHOLDS = np.round(np.arange(0.0, 1.0 + 1e-9, 0.01), 2)


def combine_attention(attention: torch.Tensor, gate: torch.Tensor | None = None,
                      lam: float = 0.5) -> torch.Tensor:
    """Combine the query networks' attention maps as Eq. 5 combines their scores.

    ``attention`` (B, K_active, c, h, w); ``gate`` (B, K_active - 1) = omega, needed when
    K_active > 1. Returns (B, c, h, w).
    """
    if attention.ndim != 5:
        raise ValueError(f"attention has shape {tuple(attention.shape)}; expected "
                         "(B, K_active, c, h, w) from model(..., return_attention=True)")
    k_active = attention.shape[1]
    if k_active == 1:
        return attention[:, 0]
    if gate is None or gate.shape != (attention.shape[0], k_active - 1):
        got = None if gate is None else tuple(gate.shape)
        raise ValueError(f"gate has shape {got}; expected ({attention.shape[0]}, {k_active - 1}) "
                         "to combine the experts' attention (Eq. 5)")
    experts = torch.einsum("bk,bkchw->bchw", gate.to(attention.dtype), attention[:, 1:])
    return lam * attention[:, 0] + (1.0 - lam) * experts


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map (last two dims) to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    hi = flat.max(-1, keepdim=True).values
    span = (hi - lo).clamp_min(1e-12)
    return ((flat - lo) / span).view_as(maps)


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (..., h, w) maps to ``size`` (H, W)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.view(*lead, *size)


def heatmaps_from_output(out: dict, image_size: int | tuple[int, int], lam: float = 0.5) -> torch.Tensor:
    """(B, c, H, W) heatmaps in [0, 1] from a model output made with ``return_attention=True``."""
    if "attention" not in out:
        raise KeyError("model output has no 'attention'; call the model with return_attention=True")
    maps = combine_attention(out["attention"].float(), out.get("gate"), lam)
    return normalise(upsample(maps, image_size))


def boxes_to_masks(boxes: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean (N, H, W) masks of (N, 4) boxes ``x0, y0, x1, y1`` in pixels (NaN box = empty).
    Pixel (i, j) is inside when its centre (j + .5, i + .5) lies in the box."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def peak(heatmaps: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """(N, 2) row and column of each (N, H, W) heatmap's peak.

    The peak is a pixel of maximum heat (within ``tol``). When several pixels tie, it is the
    tied pixel nearest their centroid. Ties are the rule, not the exception. A coarse patch
    grid upsampled bilinearly is flat from a border cell's centre out to the image edge, so a
    rule such as "first in raster order" would put the peak of every border cell on the edge
    of the image. With a 4 x 4 grid, 12 of the 16 cells are border cells.
    """
    n, h, w = heatmaps.shape
    flat = heatmaps.flatten(1).float()
    tied = flat >= flat.max(1, keepdim=True).values - tol
    rows = torch.arange(h, dtype=torch.float32).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32).repeat(h)
    count = tied.sum(1, keepdim=True).float()
    cy = (tied * rows).sum(1, keepdim=True) / count
    cx = (tied * cols).sum(1, keepdim=True) / count
    dist = ((rows - cy) ** 2 + (cols - cx) ** 2).masked_fill(~tied, float("inf"))
    idx = dist.argmin(1)
    return torch.stack([idx // w, idx % w], 1)


def pointing_game(heatmaps: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Hits (N,) bool: the :func:`peak` of each (H, W) heatmap lies inside its mask."""
    if heatmaps.shape != gt.shape:
        raise ValueError(f"heatmaps {tuple(heatmaps.shape)} and ground truth {tuple(gt.shape)} "
                         "must have the same (N, H, W) shape")
    yx = peak(heatmaps)
    return gt.bool()[torch.arange(len(gt)), yx[:, 0], yx[:, 1]]


def iou_dice_instances(heatmaps: torch.Tensor, gt: torch.Tensor,
                       thresholds: np.ndarray = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice of each of the N instances at each threshold (pixel on: heat >= t).

    Returns two (N, len(thresholds)) arrays; an empty prediction and an empty mask score 0.
    """
    if heatmaps.shape != gt.shape:
        raise ValueError(f"heatmaps {tuple(heatmaps.shape)} and ground truth {tuple(gt.shape)} "
                         "must have the same (N, H, W) shape")
    h = heatmaps.flatten(1).float()
    g = gt.flatten(1).bool()
    n, k = len(h), len(thresholds)
    # Each pixel's level: how many thresholds it reaches (heat >= t, compared in float32 as a
    # loop over thresholds would); one histogram of levels per instance, over all its pixels
    # and over its mask's, gives every threshold's areas at once by a cumulative sum.
    grid = torch.as_tensor(np.asarray(thresholds, np.float64)).float()
    if k > 1 and not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("thresholds must be increasing")
    level = torch.searchsorted(grid, h.contiguous(), right=True)
    level[torch.isnan(h)] = 0
    rows = torch.arange(n).unsqueeze(1) * (k + 1)
    hist = torch.bincount((rows + level).flatten(), minlength=n * (k + 1)).view(n, k + 1)
    hist_g = torch.bincount((rows + level)[g], minlength=n * (k + 1)).view(n, k + 1)
    at_least = lambda c: c.flip(1).cumsum(1).flip(1)[:, 1:].float()  # level >= j + 1
    p_area, inter = at_least(hist), at_least(hist_g)
    g_area = g.sum(1, keepdim=True).float()
    union = p_area + g_area - inter
    iou = inter / union.clamp_min(1)  # float32, then float64: the values a loop gives
    dice = 2 * inter / (p_area + g_area).clamp_min(1)
    return iou.double().numpy().reshape(n, k), dice.double().numpy().reshape(n, k)


def iou_dice_curve(heatmaps: torch.Tensor, gt: torch.Tensor,
                   thresholds: np.ndarray = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Mean IoU and mean Dice over the N instances at each threshold (pixel on: heat >= t).

    Returns two arrays of ``len(thresholds)``.
    """
    iou, dice = iou_dice_instances(heatmaps, gt, thresholds)
    return iou.mean(0), dice.mean(0)


def grounding_scores(heatmaps: torch.Tensor, gt: torch.Tensor,
                     threshold: float | None = None) -> dict[str, float]:
    """Pointing game accuracy, and mean IoU and Dice at ``threshold`` (one of
    :data:`THRESHOLDS`). ``None`` takes the threshold that maximises the mean Dice *of these
    instances*: use it on a validation split, and pass its result to score the test split."""
    if len(heatmaps) == 0:
        nan = float("nan")
        return dict(pointing_game=nan, IoU=nan, Dice=nan, threshold=nan, n=0)
    hits = pointing_game(heatmaps, gt)
    iou, dice = iou_dice_curve(heatmaps, gt)
    best = int(np.argmax(dice)) if threshold is None else threshold_index(threshold)
    return dict(pointing_game=hits.float().mean().item(), IoU=float(iou[best]),
                Dice=float(dice[best]), threshold=float(THRESHOLDS[best]), n=int(len(heatmaps)))


def threshold_index(threshold: float) -> int:
    """Index of ``threshold`` in :data:`THRESHOLDS` (a ValueError names the grid otherwise)."""
    hit = np.flatnonzero(np.isclose(THRESHOLDS, float(threshold), atol=1e-9))
    if not len(hit):
        raise ValueError(f"threshold = {threshold!r} is not on the grid 0, 0.01, ..., 1")
    return int(hit[0])


# ---- Fig. 7, measured on a model ------------------------------------------------------------
def grounding_heatmaps(model, images: torch.Tensor, class_names: Sequence[str], cfg: Config,
                       *, by: str = "name") -> torch.Tensor:
    """(B, len(class_names), H, W) heatmaps in [0, 1] for a batch of images
    (:func:`heatmaps_from_output`); experts combined as Eq. 5 combines scores."""
    own = model.query_entries() if hasattr(model, "query_entries") else None
    texts, cols = query_plan(model.classes, class_names, by, own)
    with evaluating(model):
        with torch.no_grad():  # outside inference mode: the model may cache these queries
            queries = plan_queries(model, texts)
        [(_, heat)] = predict_batches(model, [{"image": images}], amp=cfg.amp,  # one batch
                                      forward=lambda x: heatmaps_from_output(
                                          model(x, queries=queries, return_attention=True),
                                          images.shape[-2:], cfg.lam))
    return heat[:, torch.as_tensor(cols, device=heat.device)].cpu()


def lesions(model, cfg: Config, source: str, split: str, *, gt: str = "mask",
            by: str = "name") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Every positive (image, class) of ``source``'s ``split`` with a non-empty ground truth
    (``gt="mask"``: the lesion mask; ``"box"``: its bounding box): the model's heatmaps
    (N, H, W), the regions (N, H, W) bool, each lesion's class index (N,) and the classes."""
    if gt not in ("mask", "box"):
        raise ValueError(f"gt = {gt!r} is not valid; choose 'mask' or 'box'")
    ds = make_dataset(cfg, [source], split, with_masks=True)
    heats, truths, cls_idx = [], [], []
    for batch in make_loader(ds, cfg, train=False):
        region = batch["seg"].bool()
        if gt == "box":
            b, c, h, w = region.shape
            region = boxes_to_masks(batch["boxes"].reshape(-1, 4), h, w).view(b, c, h, w)
        keep = (batch["labels"] > 0.5) & batch["mask"] & region.flatten(2).any(-1)
        if not keep.any():
            continue
        heat = grounding_heatmaps(model, batch["image"], ds.classes, cfg, by=by)
        heats.append(heat[keep])
        truths.append(region[keep])
        cls_idx.append(keep.nonzero()[:, 1])
    if not heats:
        s = cfg.image_size
        return (torch.zeros(0, s, s), torch.zeros(0, s, s, dtype=torch.bool),
                torch.zeros(0, dtype=torch.long), tuple(ds.classes))
    return torch.cat(heats), torch.cat(truths), torch.cat(cls_idx), tuple(ds.classes)


def grounding_table(model, cfg: Config, source: str = "chestxdet10", *, split: str = "test",
                    gt: str = "mask", by: str = "name", threshold_split: str = "valid",
                    model_name: str | None = None) -> pd.DataFrame:
    """Pointing game, IoU and Dice of the heatmaps on every lesion of ``source``'s ``split``
    (:func:`lesions`), per class and a macro mean over classes with lesions.

    IoU and Dice are taken at one threshold for all classes: the one that maximises the mean
    Dice over every lesion of ``threshold_split`` (the validation split), never of the split
    that is scored, so the score is not tuned on its own test data."""
    if threshold_split == split:
        raise ValueError(f"threshold_split = {threshold_split!r} is the scored split; choose "
                         "the threshold on another split (the validation split: 'valid')")
    v_heat, v_truth, _, _ = lesions(model, cfg, source, threshold_split, gt=gt, by=by)
    if not len(v_heat):
        raise ValueError(f"the {threshold_split!r} split of {source!r} has no lesion to choose "
                         "the IoU / Dice threshold on; use a larger split (n_valid)")
    threshold = grounding_scores(v_heat, v_truth)["threshold"]
    heats, truths, cls_idx, classes = lesions(model, cfg, source, split, gt=gt, by=by)
    rows = []
    name = display_name(model, model_name)
    for j, cname in enumerate(classes):
        sel = cls_idx == j
        s = grounding_scores(heats[sel], truths[sel], threshold)
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
        hits = pointing_game(heat[b, c], region[b, c])
        area = region[b, c].flatten(1).float().mean(1)
        for i, j, hit, a in zip(b.tolist(), c.tolist(), hits.tolist(), area.tolist()):
            row = int(batch["index"][i])
            rows.append({"class": ds.classes[j], "patient": patients[row], "row": row,
                         "hit": bool(hit), "area": float(a)})
    return pd.DataFrame(rows, columns=["class", "patient", "row", "hit", "area"])

__all__ = ["THRESHOLDS", "boxes_to_masks", "combine_attention", "grounding_heatmaps",
           "grounding_instances", "grounding_scores", "grounding_table", "heatmaps_from_output",
           "iou_dice_curve", "iou_dice_instances", "lesions", "normalise", "peak",
           "pointing_game", "threshold_index", "upsample"]
