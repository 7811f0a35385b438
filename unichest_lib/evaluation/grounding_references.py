"""Honest baselines for lesion grounding, scored by the same code as the model's heatmaps.

A pointing-game rate or a Dice means little alone: lesions of some classes fill half the
lung, and some classes sit in the same place in every image. Three baselines know no more
than that, and each gives (B, c, H, W) heatmaps in [0, 1], the contract of
:func:`.grounding.grounding_heatmaps`:

- **random peak**: a peak drawn uniformly over the pixels. Its expected pointing-game hit is
  the lesion's area fraction, used exactly (:func:`random_peak_hits`, no sampling): the
  scoring code's own :func:`.grounding.peak` would put the peak of a flat map at the image
  centre. Its map is constant (zero after normalising), so for Dice it predicts the whole
  image at threshold 0 and nothing above. No map that ignores the image does better in
  expectation: thresholding random heat at t keeps a random (1 - t) share of the pixels, whose
  expected Dice 2 a (1 - t) / (a + 1 - t) for a lesion of area share a is largest at t = 0;
- **lung centre**: heat falling linearly with the distance from the nearer of the two lung
  fields' centroids (:func:`centre_map`). Two centres, not one: the centroid of both fields
  together lies on the mediastinum, outside the lungs, where no lung lesion is. Its pointing
  game is a peak at one of the two centres, each with probability one half, scored exactly
  (:func:`centre_hits`). The world keeps no per-image lung field, so the centres are the same
  for all images: the means over phantom anatomies drawn as the source draws them
  (:func:`unichest_lib.data.world.lungs.lung_field_centroids`, which says why). On real data
  they are the same phantom prior, not measured on the real images;
- **mean mask**: per class, the mean of the lesion masks of that class over the source's
  *training* split (:func:`mean_masks`), the same map for every test image: where this
  lesion usually is. A class without training lesions gets a constant map.

:func:`split_scores` scores the model and the baselines on every lesion of a split (pointing
game hit and the IoU / Dice curve over :data:`.grounding.THRESHOLDS` per lesion);
:func:`choose_threshold` picks one Dice threshold per method on the validation split, which is
then applied to the test split. One threshold per method for all classes, as MedKLIP: the
validation split has few lesions of some classes (none at all at ``smoke``), too few to tune a
threshold per class, and every map is normalised to [0, 1] per image, so one scale fits all.
:mod:`unichest_lib.evidence.grounding_measures` pools the scores over seeds and patients.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data import make_dataset, make_loader
from ..data.world.lungs import lung_field_centroids
from .grounding import (THRESHOLDS, grounding_heatmaps, iou_dice_instances, normalise,
                        pointing_game, threshold_index, upsample)

#: The baselines, in the order tables show them.
BASELINES = ("random peak", "lung centre", "mean mask")
#: The name of the model's scores in :func:`split_scores`.
MODEL = "model"


def random_peak_hits(gt: torch.Tensor) -> np.ndarray:
    """(N,) expected pointing-game hit of a peak uniform over the pixels: the share of the
    (N, H, W) mask's pixels that are lesion."""
    if gt.ndim != 3:
        raise ValueError(f"gt has shape {tuple(gt.shape)}; expected (N, H, W) masks")
    return gt.flatten(1).float().mean(1).double().numpy()


def _centres(centres) -> np.ndarray:
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2) if len(centres) else np.zeros((0, 2))
    if len(c) == 0 or not np.isfinite(c).all():
        raise ValueError(f"centres = {centres!r}: give finite (row, column) pixel coordinates")
    return c


def centre_map(centres, size: int | tuple[int, int]) -> torch.Tensor:
    """(H, W) heat 1 at the nearest of ``centres`` ((row, column) pixel coordinates, one pair
    or several), falling linearly with a pixel's distance to it to 0 at the farthest pixel;
    normalised to [0, 1]."""
    h, w = (size, size) if isinstance(size, int) else size
    c = torch.as_tensor(_centres(centres))
    rows = torch.arange(h, dtype=torch.float64)[None, :, None]
    cols = torch.arange(w, dtype=torch.float64)[None, None, :]
    d = torch.sqrt((rows - c[:, 0, None, None]) ** 2 + (cols - c[:, 1, None, None]) ** 2)
    d = d.min(0).values
    return normalise((1.0 - d / d.max().clamp_min(1e-12)).float())


def centre_hits(centres, gt: torch.Tensor) -> np.ndarray:
    """(N,) expected pointing-game hit of a peak at one of ``centres`` (each equally likely,
    at its nearest pixel) in (N, H, W) masks."""
    if gt.ndim != 3:
        raise ValueError(f"gt has shape {tuple(gt.shape)}; expected (N, H, W) masks")
    c = _centres(centres)
    r = np.clip(np.rint(c[:, 0]), 0, gt.shape[1] - 1).astype(int)
    k = np.clip(np.rint(c[:, 1]), 0, gt.shape[2] - 1).astype(int)
    return gt[:, r, k].double().mean(1).numpy()


def mean_masks(cfg: Config, source: str, split: str = "train"
               ) -> tuple[torch.Tensor, np.ndarray, tuple[str, ...]]:
    """Per class, the mean of its non-empty lesion masks over ``source``'s ``split`` (only
    positives the source observes): maps (c, S, S) normalised to [0, 1] (zeros for a class
    without lesions), the number of masks averaged (c,), and the classes."""
    ds = make_dataset(cfg, [source], split, with_masks=True)
    total, count = None, np.zeros(len(ds.classes), np.int64)
    for batch in make_loader(ds, cfg, train=False):
        region = batch["seg"].bool()
        keep = (batch["labels"] > 0.5) & batch["mask"] & region.flatten(2).any(-1)
        part = (region & keep[..., None, None]).double().sum(0)
        total = part if total is None else total + part
        count += keep.sum(0).numpy()
    mean = total / torch.as_tensor(np.maximum(count, 1), dtype=torch.float64)[:, None, None]
    return normalise(mean.float()), count, tuple(ds.classes)


@dataclasses.dataclass(frozen=True)
class Baselines:
    """The fitted baselines of one grounding source (:func:`fit_baselines`)."""

    classes: tuple[str, ...]
    centres: tuple[tuple[float, float], ...]  # (row, column) pixels: each lung's centroid
    centre_map: torch.Tensor  # (S, S)
    mean_maps: torch.Tensor  # (c, S, S), from the training split
    n_train: np.ndarray  # (c,) training masks behind each mean map

    def heatmaps(self, name: str, n: int, size: int | None = None) -> torch.Tensor:
        """(n, c, S, S) heatmaps of baseline ``name`` (resized to ``size`` when given)."""
        c = len(self.classes)
        if name == "random peak":
            one = torch.zeros(c, *self.centre_map.shape)
        elif name == "lung centre":
            one = self.centre_map.expand(c, *self.centre_map.shape)
        elif name == "mean mask":
            one = self.mean_maps
        else:
            raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
        if size is not None and tuple(one.shape[-2:]) != (size, size):
            one = normalise(upsample(one, size))
        return one.unsqueeze(0).expand(n, *one.shape)

    def expected_hits(self, name: str, gt: torch.Tensor) -> np.ndarray | None:
        """(N,) exact expected pointing-game hits of baseline ``name`` on (N, H, W) masks, or
        None when its map's :func:`.grounding.peak` is the pointing (the mean mask)."""
        if name == "random peak":
            return random_peak_hits(gt)
        if name == "lung centre":
            return centre_hits(self.centres, gt)
        return None


def fit_baselines(cfg: Config, source: str = "chestxdet10") -> Baselines:
    """The three baselines of ``source``: the lung centres of the phantom and the mean masks of
    its training split, at ``cfg.image_size``."""
    maps, n_train, classes = mean_masks(cfg, source, "train")
    centres = lung_field_centroids(cfg, source)
    return Baselines(classes, centres, centre_map(centres, cfg.image_size), maps, n_train)


def lesion_scores(heat: torch.Tensor, gt: torch.Tensor, *, hits: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """Per lesion: ``hit`` (N,) pointing game of ``heat`` (or the expected ``hits`` given),
    ``iou`` and ``dice`` (N, len(THRESHOLDS))."""
    iou, dice = iou_dice_instances(heat, gt)
    hit = pointing_game(heat, gt).double().numpy() if hits is None else np.asarray(hits, float)
    return dict(hit=hit, iou=iou, dice=dice)


@dataclasses.dataclass
class SplitScores:
    """Every lesion of one split (``lesions``: class, patient, row, area) and, per method
    (:data:`MODEL` and the baselines), its :func:`lesion_scores` in the same order."""

    lesions: pd.DataFrame
    scores: dict[str, dict[str, np.ndarray]]


def split_scores(cfg: Config, source: str, split: str, *, model=None,
                 baselines: Baselines | None = None, by: str = "name") -> SplitScores:
    """The model's (when given) and the baselines' (when given) scores on every positive
    (image, class) of ``source``'s ``split`` with a non-empty lesion mask."""
    if model is None and baselines is None:
        raise ValueError("give a model, baselines, or both to score")
    ds = make_dataset(cfg, [source], split, with_masks=True)
    if baselines is not None and tuple(ds.classes) != baselines.classes:
        raise ValueError(f"the baselines were fitted on classes {baselines.classes}, but "
                         f"{source!r} {split} has {tuple(ds.classes)}")
    names = ([MODEL] if model is not None else []) + (list(BASELINES) if baselines else [])
    patients = np.asarray(ds.table.patients)
    rows, parts = [], {n: [] for n in names}
    for batch in make_loader(ds, cfg, train=False):
        region = batch["seg"].bool()
        keep = (batch["labels"] > 0.5) & batch["mask"] & region.flatten(2).any(-1)
        if not keep.any():
            continue
        b, c = keep.nonzero(as_tuple=True)
        gt = region[b, c]
        for name in names:
            if name == MODEL:
                heat = grounding_heatmaps(model, batch["image"], ds.classes, cfg, by=by)
                hits = None
            else:
                heat = baselines.heatmaps(name, len(keep), size=gt.shape[-1])
                hits = baselines.expected_hits(name, gt)
            parts[name].append(lesion_scores(heat[b, c], gt, hits=hits))
        area = gt.flatten(1).float().mean(1)
        for i, j, a in zip(b.tolist(), c.tolist(), area.tolist()):
            row = int(batch["index"][i])
            rows.append({"class": ds.classes[j], "patient": patients[row], "row": row,
                         "area": float(a)})
    t = len(THRESHOLDS)
    empty = dict(hit=np.zeros(0), iou=np.zeros((0, t)), dice=np.zeros((0, t)))
    scores = {n: ({k: np.concatenate([p[k] for p in ps]) for k in empty} if ps else dict(empty))
              for n, ps in parts.items()}
    lesions = pd.DataFrame(rows, columns=["class", "patient", "row", "area"])
    return SplitScores(lesions, scores)


def choose_threshold(dice: np.ndarray) -> float:
    """The threshold of :data:`THRESHOLDS` that maximises the mean Dice over the lesions of
    ``dice`` (N, len(THRESHOLDS)) (the lowest on ties); pass the validation split's curves."""
    dice = np.asarray(dice, dtype=np.float64)
    if dice.ndim != 2 or dice.shape[1] != len(THRESHOLDS):
        raise ValueError(f"dice has shape {dice.shape}; expected (N, {len(THRESHOLDS)})")
    if len(dice) == 0:
        raise ValueError("no validation lesion to choose the Dice threshold on; use a larger "
                         "validation split (n_valid)")
    return float(THRESHOLDS[int(np.argmax(dice.mean(0)))])


def at_threshold(curve: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) column of ``curve`` (N, len(THRESHOLDS)) at ``threshold``."""
    return np.asarray(curve)[:, threshold_index(threshold)]


__all__ = ["BASELINES", "Baselines", "MODEL", "SplitScores", "at_threshold", "centre_hits",
           "centre_map",
           "choose_threshold", "fit_baselines", "lesion_scores", "mean_masks",
           "random_peak_hits", "split_scores"]
