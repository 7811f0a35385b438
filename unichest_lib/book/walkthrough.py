"""One test image through the evaluation, step by step: picking the example and drawing it.

Chapter 04 runs one image of a zero-shot source and one lesion of the grounding source
through the model by hand before its tables, and compares each result with the library
function that fills the tables. This module holds what that walk-through needs beyond the
model itself:

- :func:`zero_shot_pick` — a downstream source and a class of it that no pre-training source
  labels (an *unseen* class), the case zero-shot classification is for;
- :func:`first_positive` — the first test image where a finding is an observed positive
  (with a non-empty lesion mask, for grounding); the first, so the example is not chosen
  for how well the model does on it;
- :func:`lesion_overlay` — the heatmap over the radiograph with the lesion's outline
  (:func:`mask_outline`, :func:`draw_outline`) and the heatmap's peak.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import Config
from ..data.label_spaces import source_classes

#: The colour of ground truth in the book's overlays (the explorer's box has it too).
GREEN = (0, 255, 102)


def zero_shot_pick(cfg: Config, model) -> tuple[str, str]:
    """``(source, finding)``: the first downstream source with a class ``model`` was not
    trained on, and the first such class
    (:func:`unichest_lib.evidence.claims.zero_shot_sources`). When no downstream source has
    one (real data can lack it), the first class of the first zero-shot source instead, a
    *seen* class: the caller can tell by ``finding in model.classes``."""
    from ..evidence.claims import zero_shot_sources

    known = set(model.classes)
    for src in zero_shot_sources(cfg):
        unseen = [c for c in source_classes(src, cfg.data) if c not in known]
        if unseen:
            return src, unseen[0]
    candidates = [s for s in cfg.downstream if s != "chestxdet10"]
    if not candidates:
        raise ValueError(f"no downstream source to classify zero-shot in {cfg.downstream}; "
                         "add one besides chestxdet10 (the grounding source)")
    return candidates[0], source_classes(candidates[0], cfg.data)[0]


def first_positive(dataset, finding: str | None = None, *,
                   lesion: bool = False) -> tuple[int, str]:
    """``(index, finding)`` of the first image of ``dataset`` (in its order) where
    ``finding`` (any class when None) is an observed positive; with ``lesion`` also a
    non-empty lesion mask (a dataset built ``with_masks=True``). Raises ValueError when
    there is none."""
    classes = tuple(dataset.classes)
    if finding is not None and finding not in classes:
        raise ValueError(f"finding {finding!r} is not a class of this dataset; choose one of "
                         f"{classes}")
    table = dataset.table
    positive = (np.nan_to_num(table.labels) > 0.5) & np.asarray(table.mask, dtype=bool)
    if finding is not None:
        keep = np.zeros(len(classes), dtype=bool)
        keep[classes.index(finding)] = True
        positive &= keep[None, :]
    for row, col in zip(*np.nonzero(positive)):  # row-major: image order, then class order
        if lesion:
            item = dataset[int(row)]
            if "seg" not in item:
                raise ValueError("lesion=True needs a dataset built with_masks=True")
            if not bool(item["seg"][col].any()):
                continue
        return int(row), classes[col]
    what = "any finding" if finding is None else repr(finding)
    raise ValueError(f"no image of this dataset has {what} as an observed positive"
                     + (" with a lesion mask" if lesion else ""))


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The outline of a boolean (H, W) ``mask``: the pixels just outside it that touch it
    (4-neighbourhood), so the lesion's own pixels stay visible under a drawn outline."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {m.shape}")
    grown = m.copy()
    grown[1:] |= m[:-1]
    grown[:-1] |= m[1:]
    grown[:, 1:] |= m[:, :-1]
    grown[:, :-1] |= m[:, 1:]
    return grown & ~m


def draw_outline(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int] = GREEN) -> np.ndarray:
    """A copy of the uint8 (H, W, 3) ``rgb`` with :func:`mask_outline` of the (H, W) ``mask``
    painted in ``color``."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask {m.shape} and image {rgb.shape[:2]} must have the same (H, W); "
                         "give the lesion mask at the image's resolution")
    out = rgb.copy()
    out[mask_outline(m)] = color
    return out


def lesion_overlay(image: np.ndarray, heatmap: np.ndarray, mask: np.ndarray, *,
                   point: Sequence[float] | None = None, title: str = "",
                   size_px: int = 360):
    """:func:`unichest_lib.book.figures.heatmap_overlay` with the lesion's outline (green)
    instead of its box: ``image`` (H, W) or (1, H, W), ``heatmap`` (h, w), ``mask`` (H, W)
    bool, ``point`` the heatmap's peak ``(x, y)`` (white cross)."""
    from . import figures

    image = np.asarray(image)
    rgb = draw_outline(figures.overlay_rgb(image, np.asarray(heatmap)), mask)
    fig = figures.heatmap_overlay(image, np.asarray(heatmap), title=title, point=point,
                                  size_px=size_px)
    fig.data[0].source = figures._png_uri(rgb)  # the same overlay, outline painted in
    return fig


__all__ = ["GREEN", "draw_outline", "first_positive", "lesion_overlay", "mask_outline",
           "zero_shot_pick"]
