"""The one sample contract that every dataset of the library yields (paper Section III-A).

A multi-source dataset is described by *arrays* (one row per image) plus a way to get the
pixels of row ``i``. Both worlds — the embedded procedural one (:mod:`unichest_lib.data.world`)
and the real datasets (:mod:`unichest_lib.data.real`) — build a :class:`MultiSourceDataset`, so
the model, the trainer and the evaluation never know which world they are fed from.

Each item is a dict:

========== ========================= ===============================================
key        type / shape              meaning
========== ========================= ===============================================
image      float32 (1, H, W) in 0..1 the grayscale radiograph
labels     float32 (c,)              1 = positive, 0 = negative (0 where missing)
mask       bool (c,)                 True where the sample's source observes the class
source     int64 ()                  index into ``dataset.sources`` (the paper's ``l``)
text       str                       the paper's ``t``: filtered report entities, or
                                     positive labels joined by ``[SEP]``
index      int64 ()                  row in the dataset
positions  int64 (c,)                where ``text`` places each existing finding: an
                                     index into :data:`.positions.POSITIONS`, -1 where
                                     unknown (MedKLIP's position supervision)
seg        bool (c, H, W)            only with ``with_masks=True``: per-class masks
boxes      float32 (c, 4)            only with ``with_masks=True``: x0, y0, x1, y1 in
                                     pixels, NaN where the class is absent
========== ========================= ===============================================

``c`` is ``len(dataset.classes)``; the class order is the dataset's own (for a pre-training
collection: the union label space of its sources,
:func:`unichest_lib.data.label_spaces.union_classes`).

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .triplets import SEP, Triplet  # re-exported: the sample contract's text units


def labels_to_text(labels: np.ndarray, mask: np.ndarray, classes: Sequence[str]) -> str:
    """Text for a sample without a report: its observed positive classes joined by ``[SEP]``
    (paper, footnote 1). A sample with no positive class reads ``"no finding"``."""
    pos = [c for c, y, m in zip(classes, labels, mask) if m and y > 0.5]
    return SEP.join(pos) if pos else "no finding"


@dataclass
class SampleTable:
    """The per-image arrays of a dataset (N rows, c classes).

    ``labels`` holds 1/0 with NaN for missing classes; ``mask`` is ``~isnan(labels)``.
    """

    classes: tuple[str, ...]
    sources: tuple[str, ...]
    labels: np.ndarray  # float32 (N, c), NaN = missing
    source_ids: np.ndarray  # int64 (N,)
    patients: np.ndarray  # object/str (N,), patient identifiers (for disjoint splits)
    texts: list[str]  # (N,), the paper's t

    def __post_init__(self) -> None:
        n, c = self.labels.shape
        if c != len(self.classes):
            raise ValueError(f"labels have {c} columns but there are {len(self.classes)} classes")
        for name in ("source_ids", "patients"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, labels have {n}")
        if len(self.texts) != n:
            raise ValueError(f"texts has {len(self.texts)} rows, labels have {n}")
        if n and (self.source_ids.min() < 0 or self.source_ids.max() >= len(self.sources)):
            raise ValueError("source_ids must index into sources")

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.labels)

    def __len__(self) -> int:
        return len(self.labels)


ImageFn = Callable[[int], np.ndarray]
"""Returns the image of row ``i`` as uint8 or float32 array (H, W)."""


class MultiSourceDataset:
    """A map-style PyTorch dataset over a :class:`SampleTable` and an image function.

    ``image_fn(i)`` returns row ``i``'s pixels (uint8 or float in 0..1, shape (H, W), already
    at the wanted size); ``masks_fn(i)``, when given, returns ``(seg, boxes)`` as in the table
    in this module's docstring. Subclasses of ``torch.utils.data.Dataset`` are not needed:
    PyTorch's ``DataLoader`` takes any object with ``__len__`` and ``__getitem__``.
    """

    def __init__(self, table: SampleTable, image_fn: ImageFn, *, masks_fn=None, name: str = ""):
        self.table = table
        self.image_fn = image_fn
        self.masks_fn = masks_fn
        self.name = name

    # convenient views -------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self.table.classes

    @property
    def sources(self) -> tuple[str, ...]:
        return self.table.sources

    @property
    def with_masks(self) -> bool:
        return self.masks_fn is not None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict:
        import torch

        from .positions import position_index  # lazy: positions -> report_filter -> samples

        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} samples")
        img = np.asarray(self.image_fn(i))
        if img.ndim != 2:
            raise ValueError(f"image {i} of {self.name or 'dataset'} has shape {img.shape}; "
                             "expected a single-channel (H, W) array")
        if img.dtype == np.uint8:
            x = torch.from_numpy(img).float().div_(255.0)
        else:
            x = torch.from_numpy(img.astype(np.float32, copy=False))
        y = self.table.labels[i]
        m = ~np.isnan(y)
        item = {
            "image": x.unsqueeze(0),
            "labels": torch.from_numpy(np.nan_to_num(y, nan=0.0).astype(np.float32)),
            "mask": torch.from_numpy(m),
            "source": torch.tensor(int(self.table.source_ids[i]), dtype=torch.int64),
            "text": self.table.texts[i],
            "index": torch.tensor(i, dtype=torch.int64),
            "positions": torch.tensor(position_index(self.table.texts[i], self.table.classes),
                                      dtype=torch.int64),
        }
        if self.masks_fn is not None:
            seg, boxes = self.masks_fn(i)
            item["seg"] = torch.as_tensor(seg, dtype=torch.bool)
            item["boxes"] = torch.as_tensor(boxes, dtype=torch.float32)
        return item
