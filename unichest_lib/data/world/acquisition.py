"""The imaging chain of each source: the *acquisition style* heterogeneity (the first dial
of :mod:`.sources`).

:func:`acquire` turns a batch of attenuation maps into 8-bit radiographs the way a source's
scanner and post-processing would: intensity curve (gamma), contrast and exposure, blur,
resolution loss, anti-scatter grid lines, quantum-like (signal-dependent) noise, block-
compression artefacts, collimation borders, a burned-in laterality marker and, for some
films, inverted polarity. All parameters come from :class:`~.sources.Acquisition`; at
heterogeneity 0 every source uses the same neutral chain.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .phantom import F32
from .sources import Acquisition


def _block_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Each k×k block replaced by its mean (B, S, S), S divisible by k."""
    b, s, _ = img.shape
    m = img.reshape(b, s // k, k, s // k, k).mean(axis=(2, 4), dtype=F32)
    return np.repeat(np.repeat(m, k, axis=1), k, axis=2)


def acquire(A: np.ndarray, acq: Acquisition, rng: np.random.Generator, *, upsample=None) -> np.ndarray:
    """8-bit images (B, S, S) from attenuation maps ``A`` under ``acq``.

    The intensity curve and the blur are smooth, so they run at ``A``'s resolution; when the
    anatomy was drawn at a lower resolution, ``upsample`` (a function) brings the image to
    the output size before the full-resolution steps (grid, noise, artefacts, markers).
    """
    px = A.shape[1] / 128.0  # parameters are written for 128 px images
    img = np.clip(A / F32(0.75), 0, 1)
    if acq.gamma != 1:
        img = img ** F32(acq.gamma)
    img = F32(0.5) + F32(acq.contrast) * (img - F32(0.5)) + F32(acq.exposure)
    if acq.blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(0, acq.blur * px, acq.blur * px), mode="nearest")
    if upsample is not None:
        img = upsample(img)
    n, s, _ = img.shape
    if acq.downsample > 1 and s % (2 * acq.downsample) == 0:
        img = _block_mean(img, int(acq.downsample))
    if acq.grid > 0:
        cols = np.sin(np.arange(s, dtype=F32) * F32(2 * np.pi / 3.0))
        img = img + F32(acq.grid) * cols[None, None, :]
    img = np.clip(img, 0, 1)
    img = img + F32(acq.noise) * np.sqrt(img + F32(0.05)) * rng.standard_normal(img.shape, dtype=F32)
    if acq.blocking > 0 and s % 8 == 0:
        img = (1 - F32(0.6 * acq.blocking)) * img + F32(0.6 * acq.blocking) * _block_mean(img, 8)
    _collimate(img, acq.border, rng)
    _marker(img, acq.p_marker, rng)
    flip = rng.random(n) < acq.p_invert
    img[flip] = 1 - img[flip]
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _collimate(img: np.ndarray, border: float, rng: np.random.Generator) -> None:
    """Bright unexposed bands at the image edges (collimator), width jittered per image."""
    n, s, _ = img.shape
    w = np.round(border * s * rng.uniform(0.5, 1.5, (n, 4))).astype(int)
    if border <= 0:
        return
    i = np.arange(s)
    rows = (i[None, :] < w[:, :1]) | (i[None, :] >= s - w[:, 1:2])
    cols = (i[None, :] < w[:, 2:3]) | (i[None, :] >= s - w[:, 3:4])
    band = rows[:, :, None] | cols[:, None, :]
    img[band] = F32(0.92)


def _marker(img: np.ndarray, p: float, rng: np.random.Generator) -> None:
    """A burned-in laterality marker: a bright letter-like glyph in an upper corner."""
    n, s, _ = img.shape
    on = rng.random(n) < p
    right = rng.random(n) < 0.5
    if not on.any():
        return
    g = max(4, s // 16)
    glyph = np.zeros((g, g), bool)
    glyph[:, : max(1, g // 4)] = True  # an "L": vertical stroke ...
    glyph[-max(1, g // 4):, :] = True  # ... and foot
    y0, x_left, x_right = s // 20, s // 20, s - s // 20 - g
    for x0, sel in ((x_left, on & ~right), (x_right, on & right)):
        block = img[sel, y0:y0 + g, x0:x0 + g]
        block[:, glyph] = F32(1.0)
        img[sel, y0:y0 + g, x0:x0 + g] = block
