"""Reading one real image: any of the datasets' formats to float32 (size, size) in 0..1.

PNG / JPEG (8- or 16-bit, grey or colour) through Pillow, DICOM through ``pydicom``; centre
square crop and a bilinear resize. Errors name the file, the dataset and where to get it.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .registry import REAL_DATASETS

log = logging.getLogger(__name__)

_NOTED: set[tuple[str, str]] = set()


def read_image(path: str, size: int, *, dataset: str = "") -> np.ndarray:
    """The image at ``path`` as float32 (size, size) in 0..1: grayscale, centre-cropped to a
    square, resized bilinearly. 8-bit images are divided by 255; 16-bit and float images are
    min-max scaled; colour images are converted to grayscale (noted once per dataset); DICOM
    (``.dcm``/``.dicom``) needs ``pydicom`` and MONOCHROME1 is inverted."""
    from PIL import Image

    where = f" of dataset {dataset!r}" if dataset else ""
    if not os.path.isfile(path):
        url = f" (get it from {REAL_DATASETS[dataset].access})" if dataset in REAL_DATASETS else ""
        raise FileNotFoundError(f"image {path!r}{where} does not exist{url}")
    try:
        if path.lower().endswith((".dcm", ".dicom")):
            im = Image.fromarray(_read_dicom(path), mode="F")
        else:
            with Image.open(path) as f:
                f.load()
                im = _grayscale(f, dataset)
        return _square_resize(im, size)
    except (ImportError, FileNotFoundError):
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise ValueError(f"cannot read image {path!r}{where}: {type(e).__name__}: {e}; the file "
                         "is corrupt or not an image") from None


def _grayscale(im, dataset: str):
    """An 8-bit "L" image, or an "F" image min-max scaled to 0..1 for deeper pixel types."""
    from PIL import Image

    if im.mode in ("L", "1"):
        return im.convert("L")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.fromarray(_minmax(np.asarray(im).astype(np.float32)), mode="F")
    if (dataset, im.mode) not in _NOTED:
        _NOTED.add((dataset, im.mode))
        log.info("dataset %s: converting %s images to grayscale", dataset or "?", im.mode)
    return im.convert("L")


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _square_resize(im, size: int) -> np.ndarray:
    """Centre square crop, bilinear resize (PIL, with its fast reducing step), float 0..1."""
    from PIL import Image

    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s))
    if s != size:
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    a = np.asarray(im, dtype=np.float32)
    if im.mode == "L":
        a = a / 255.0
    return np.clip(a, 0.0, 1.0)


def _read_dicom(path: str) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImportError(f"reading the DICOM image {path!r} needs the package pydicom "
                          "(pip install pydicom)") from None
    ds = pydicom.dcmread(path)
    a = _minmax(ds.pixel_array.astype(np.float32))
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        a = 1.0 - a
    return a if a.ndim == 2 else a.mean(-1)


__all__ = ["read_image"]
