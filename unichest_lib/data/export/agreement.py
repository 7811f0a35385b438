"""Does the real-data path read an export back as the embedded path gives it? One row per
dataset and split: the same images, labels on the shared classes, patients, pixels (within
what the format keeps) and reports. Chapter 00 shows this table; ``tests/test_export.py``
asserts the same properties image by image.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...config import Config
from ..real import make_real_dataset
from ..world import world_of
from .core import FORMATS, MANIFEST_CSV

SPLITS = ("train", "valid", "test")


def _module(source: str):
    return importlib.import_module(f"{__package__}.{FORMATS[source]}")


def pixel_kind(source: str) -> str:
    """How ``source``'s format keeps pixels: ``exact``, ``minmax`` (16-bit PNG, DICOM: the
    reader min-max scales) or ``lossy`` (JPEG)."""
    return _module(source).PIXELS


def ambiguous(source: str) -> tuple[str, ...]:
    """Classes ``source``'s format folds into one label (VinDr-CXR's "Nodule/Mass"): the
    harmonisation reads their positives back as missing, by design."""
    return tuple(getattr(_module(source), "AMBIGUOUS", ()))


def shared_classes(emb, real, source: str) -> list[str]:
    """The classes both label spaces observe and the format can round-trip."""
    return [c for c in emb.classes if c in real.classes and c not in ambiguous(source)]


def minmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def words(text) -> list[str]:
    """A report's words, without section headings or punctuation."""
    t = re.sub(r"\b(FINDINGS|IMPRESSION)\s*:", " ", str(text or ""))
    return re.findall(r"[a-z0-9]+", t.lower())


def matched(cfg: Config, real_cfg: Config, out: str | Path, source: str, split: str,
            *, with_masks: bool = False):
    """The embedded and the exported dataset of ``source``'s ``split`` and, for each exported
    row, the embedded row holding the same image (via ``manifest.csv``)."""
    out = Path(out)
    emb = world_of(cfg).dataset([source], split, with_masks=with_masks)
    real = make_real_dataset(real_cfg, [source], split, with_masks=with_masks)
    m = pd.read_csv(out / MANIFEST_CSV, dtype={"patient": str})
    m = m[m["dataset"] == source]
    row_of = {str((out / f).resolve()): r for f, r in zip(m["file"], m["world_row"])}
    rows = np.array([row_of[str(Path(p).resolve())] for p in real.paths], np.int64)
    pos = {int(r): i for i, r in enumerate(emb.world_rows)}
    order = np.array([pos.get(int(r), -1) for r in rows], np.int64)
    return emb, real, order


def compare(cfg: Config, data_yml: str | Path, sources: Sequence[str] | None = None,
            splits: Sequence[str] = SPLITS, n_pixels: int = 16) -> pd.DataFrame:
    """One row per (dataset, split) of the export whose ``data.yml`` is ``data_yml``."""
    data_yml = Path(data_yml)
    real_cfg = cfg.replace(data=str(data_yml))
    m = pd.read_csv(data_yml.parent / MANIFEST_CSV, usecols=["dataset"])
    sources = list(dict.fromkeys(m["dataset"])) if sources is None else list(sources)
    rows = []
    for s in sources:
        for split in splits:
            emb, real, order = matched(cfg, real_cfg, data_yml.parent, s, split)
            ok = order >= 0
            same = ok.all() and sorted(order.tolist()) == list(range(len(emb)))
            shared = shared_classes(emb, real, s)
            a = emb.table.labels[order[ok]][:, [emb.classes.index(c) for c in shared]]
            b = real.table.labels[ok][:, [real.classes.index(c) for c in shared]]
            agree = float(np.mean(np.nan_to_num(a, nan=-1) == np.nan_to_num(b, nan=-1))) \
                if a.size else float("nan")
            kind = pixel_kind(s)
            err = 0.0
            for i in np.flatnonzero(ok)[:n_pixels]:
                x = emb.image_fn(int(order[i])).astype(np.float64) / 255.0
                y = np.asarray(real.image_fn(int(i)), np.float64)
                err = max(err, float(np.abs(y - (minmax(x) if kind == "minmax" else x)).max()))
            groups = pd.DataFrame({"e": emb.patients[order[ok]], "r": real.table.patients[ok]})
            rep = [words(real.reports[i]) == words(emb.reports[order[i]])
                   for i in np.flatnonzero(ok) if emb.reports[order[i]] is not None]
            rows.append(dict(
                dataset=s, split=split, embedded=len(emb), exported=len(real), same_images=same,
                shared_classes=len(shared),
                exported_only=", ".join(c for c in real.classes if c not in emb.classes) or "-",
                labels_agree=agree, pixels=kind, max_pixel_error=err,
                same_patients=bool((groups.groupby("e")["r"].nunique() == 1).all()),
                reports_equal=float(np.mean(rep)) if rep else float("nan")))
    return pd.DataFrame(rows)


__all__ = ["SPLITS", "ambiguous", "compare", "matched", "minmax", "pixel_kind", "shared_classes",
           "words"]
