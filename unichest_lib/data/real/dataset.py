"""Building a :class:`~unichest_lib.data.samples.MultiSourceDataset` from the real datasets
a YAML file describes: parse each (cached), split by patient, check the images exist,
harmonise the labels onto the union of the sources' classes.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from ...config import Config, ConfigError
from ..labels import in_union_order
from ..samples import MultiSourceDataset, SampleTable, labels_to_text
from .harmonise import harmonise, observed_classes, patient_split
from .images import read_image
from .parsers import PARSERS
from .registry import REAL_DATASETS, get, read_spec

log = logging.getLogger(__name__)


def load_frame(name: str, opts: dict) -> pd.DataFrame:
    """The parsed frame of one dataset (cached per options): path, patient, report, labels."""
    key = {k: v for k, v in opts.items() if k != "on_missing"}  # not used by the parsers
    return _load_frame_cached(name, json.dumps(key, sort_keys=True, default=str)).copy()


@lru_cache(maxsize=16)
def _load_frame_cached(name: str, opts_json: str) -> pd.DataFrame:
    opts = json.loads(opts_json)
    frame = PARSERS[name](opts)
    frame["patient"] = frame["patient"].astype(str)
    return frame.reset_index(drop=True)


def make_real_dataset(cfg: Config, sources: Sequence[str], split: str, *,
                      with_masks: bool = False) -> MultiSourceDataset:
    """The ``split`` of real datasets ``sources`` as described by the YAML file ``cfg.data``."""
    spec = read_spec(cfg.data)
    if spec.get("image_size") not in (None, cfg.image_size):
        raise ConfigError(f"{cfg.data}: image_size {spec['image_size']} differs from "
                          f"cfg.image_size {cfg.image_size}; set the config's image_size instead")
    missing = [s for s in sources if s not in spec["datasets"]]
    if missing:
        raise ConfigError(f"{cfg.data}: no entry for source(s) {missing}; add them under "
                          f"'datasets:' (known: {', '.join(REAL_DATASETS)})")
    if with_masks:
        nobox = [s for s in sources if not get(s).has_boxes]
        if nobox:
            raise ValueError(f"with_masks=True needs box annotations; real datasets {nobox} "
                             "have none here (use chestxdet10)")
    classes = in_union_order(c for s in sources for c in observed_classes(s))
    parts = []
    for sid, name in enumerate(sources):
        opts = spec["datasets"][name]
        f = load_frame(name, opts)
        f = f[patient_split(f["patient"], name, spec.get("split")) == split]
        f = _check_images(f, name, opts.get("on_missing", "error"), split)
        parts.append((sid, name, f))
    return _to_dataset(parts, sources, classes, cfg.image_size, with_masks)


def _to_dataset(parts, sources, classes, size, with_masks) -> MultiSourceDataset:
    labels = np.concatenate([harmonise(f, n, classes) for _, n, f in parts]) if parts else \
        np.zeros((0, len(classes)), np.float32)
    source_ids = np.concatenate([np.full(len(f), sid, np.int64) for sid, _, f in parts])
    patients = np.concatenate([f["patient"].to_numpy(object) for _, _, f in parts])
    paths = [p for _, _, f in parts for p in f["path"]]
    names = [n for _, n, f in parts for _ in range(len(f))]
    mask = ~np.isnan(labels)
    reports = [r for _, _, f in parts for r in (f["report"] if "report" in f else [None] * len(f))]
    texts = [r if isinstance(r, str) and r.strip() else
             labels_to_text(np.nan_to_num(y), m, classes) for r, y, m in zip(reports, labels, mask)]
    table = SampleTable(classes=tuple(classes), sources=tuple(sources), labels=labels,
                        source_ids=source_ids, patients=patients, texts=texts)

    def image_fn(i: int) -> np.ndarray:
        return read_image(paths[i], size, dataset=names[i])

    masks_fn = None
    if with_masks:
        boxes = [b for _, _, f in parts for b in f["boxes"]]
        masks_fn = _BoxMasks(boxes, classes, size)
    ds = MultiSourceDataset(table, image_fn, masks_fn=masks_fn, name="+".join(sources))
    ds.reports, ds.paths = reports, paths  # raw report (or None) and image file of each row
    return ds


def _check_images(f: pd.DataFrame, name: str, on_missing: str, split: str) -> pd.DataFrame:
    """The rows of one source's ``split`` whose image file exists; raise (or, with
    ``on_missing: skip``, log and drop) when some do not."""
    exists = np.fromiter((os.path.isfile(p) for p in f["path"]), bool, len(f))
    if exists.all():
        return f
    miss = f["path"][~exists]
    if on_missing == "skip":
        log.warning("dataset %s: skipping %d of the %d %s images not on disk "
                    "(on_missing: skip), e.g. %s", name, len(miss), len(f), split, miss.iloc[0])
        return f[exists]
    raise FileNotFoundError(
        f"dataset {name!r}: {len(miss)} of the {len(f)} images of its {split} split are missing, "
        f"e.g. {miss.iloc[0]!r}; "
        f"download them from {get(name).access}, fix imgpath, or set 'on_missing: skip'")


class _BoxMasks:
    """(seg, boxes) of a row from its list of (class, x0, y0, x1, y1, width, height)."""

    def __init__(self, boxes, classes, size):
        self.boxes, self.classes, self.size = boxes, list(classes), size

    def __call__(self, i: int):
        s = self.size
        seg = np.zeros((len(self.classes), s, s), bool)
        out = np.full((len(self.classes), 4), np.nan, np.float32)
        for cls, x0, y0, x1, y1, w, h in self.boxes[i]:
            if cls not in self.classes:
                continue
            j = self.classes.index(cls)
            b = np.array([x0 * s / w, y0 * s / h, x1 * s / w, y1 * s / h], np.float32)
            a, c = int(b[0]), int(np.ceil(b[2]))
            seg[j, int(b[1]):int(np.ceil(b[3])), a:c] = True
            out[j] = b if np.isnan(out[j, 0]) else np.r_[np.minimum(out[j, :2], b[:2]),
                                                          np.maximum(out[j, 2:], b[2:])]
        return seg, out


__all__ = ["load_frame", "make_real_dataset"]
