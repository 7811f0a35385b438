"""Render a chunk of one source's images: anatomy, findings, acquisition — one batch.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import copy

import numpy as np

from . import findings as Fd
from . import phantom as P
from .acquisition import acquire
from .population import FINDINGS, Population
from .sources import SourceSpec

#: Bump whenever a change alters pixels, so every cached image is re-rendered. The cache key
#: also holds :func:`code_digest`, so an edit to the renderer's code re-renders by itself.
RENDER_VERSION = 1


def code_digest() -> str:
    """SHA-256 (short) of the source files that decide pixels."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("phantom.py", "findings.py", "acquisition.py", "render.py", "sources.py",
                 "population.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


#: From 128 px up, anatomy and findings are drawn at ``image_size / RENDER_SCALE`` and upsampled
#: (bilinear for pixels, nearest for masks) before the acquisition chain, which adds noise,
#: grid lines and markers at full resolution. All structures are smooth at that scale, and it
#: makes rendering ~3x faster.
RENDER_SCALE = 2

#: Images rendered together: small enough for the (B, S, S) temporaries to stay in cache,
#: which is ~3x faster than one big batch. Part of the cache key (it orders random draws).
MINI_BATCH = 8


def render_rows(pop: Population, rows: np.ndarray, spec: SourceSpec, size: int,
                rng: np.random.Generator):
    """Images (n, S, S) uint8 and sparse masks for ``rows`` of ``pop``, rendered in mini-
    batches of :data:`MINI_BATCH` images drawing from ``rng`` in order.

    Masks come back as ``(pairs, bits)``: ``pairs`` (m, 2) int32 rows of (image, finding
    column) for every present finding, ``bits`` (m, S*S/8) uint8 its packed mask.
    """
    images, pairs, bits = [], [], []
    for start in range(0, len(rows), MINI_BATCH):
        im, pr, bt = _render_batch(pop, rows[start:start + MINI_BATCH], spec, size, rng)
        images.append(im)
        pairs.append(pr + np.array([start, 0], np.int32))
        bits.append(bt)
    if not images:
        return (np.zeros((0, size, size), np.uint8), np.zeros((0, 2), np.int32),
                np.zeros((0, (size * size + 7) // 8), np.uint8))
    return np.concatenate(images), np.concatenate(pairs), np.concatenate(bits)


def _render_batch(pop: Population, rows: np.ndarray, spec: SourceSpec, size: int,
                  rng: np.random.Generator):
    """:func:`render_rows` for one mini-batch."""
    n = len(rows)
    acq, app = spec.acquisition, spec.appearance
    full = size
    scale = RENDER_SCALE if size % (2 * RENDER_SCALE) == 0 and size >= 128 else 1
    size = full // scale
    a = P.sample_anatomy(rng, n, scale=acq.scale, rotation_deg=acq.rotation)
    truth = pop.truth[rows]
    has = {c: truth[:, j] for j, c in enumerate(FINDINGS)}
    a0 = copy.deepcopy(a)
    params = lambda j, idx: Fd.params_for(  # noqa: E731
        pop.side[rows[idx], j], pop.u[rows[idx], j], pop.v[rows[idx], j],
        pop.jitter[rows[idx], j], pop.device_kind[rows[idx]], app)
    everyone = np.arange(n)
    Fd.modify_anatomy(a, has, {c: params(FINDINGS.index(c), everyone) for c in Fd.ANATOMICAL})
    x, y = P.patient_grid(a, size)
    keep = np.ones((n, size, size), P.F32)
    layers = np.zeros((n, size, size), P.F32)
    noise = P.smooth_noise(rng, n, size, 12)
    pairs, masks = [], []
    for j, c in enumerate(FINDINGS):
        idx = np.flatnonzero(truth[:, j])
        if len(idx) == 0:
            continue
        if c in Fd.ANATOMICAL:
            m = Fd.anatomy_masks(a0.take(idx), a.take(idx), x[idx], y[idx], c)
        else:
            layer, m = Fd.RENDERERS[c](a.take(idx), params(j, idx), x[idx], y[idx], noise[idx])
            layers[idx] += layer
            if c == "pneumothorax":
                keep[idx] *= ~m
        pairs.append(np.stack([idx, np.full_like(idx, j)], 1))
        if scale > 1:
            m = m.repeat(scale, axis=1).repeat(scale, axis=2)
        masks.append(np.packbits(m.reshape(len(idx), -1), axis=1))
    markings = P.smooth_noise(rng, n, size, 24)
    A = P.render_base(a, x, y, keep, markings) + layers
    images = acquire(A, acq, rng, upsample=upsample2 if scale > 1 else None)
    bits_len = (full * full + 7) // 8
    pairs = np.concatenate(pairs).astype(np.int32) if pairs else np.zeros((0, 2), np.int32)
    bits = np.concatenate(masks) if masks else np.zeros((0, bits_len), np.uint8)
    return images, pairs, bits


def upsample2(a: np.ndarray) -> np.ndarray:
    """Bilinear ×2 upsampling of (B, H, W) with half-pixel centres and clamped edges."""
    def along(v, axis):
        prev = np.concatenate([np.take(v, [0], axis), np.take(v, np.arange(v.shape[axis] - 1), axis)], axis)
        nxt = np.concatenate([np.take(v, np.arange(1, v.shape[axis]), axis), np.take(v, [-1], axis)], axis)
        even, odd = 0.75 * v + 0.25 * prev, 0.75 * v + 0.25 * nxt
        out = np.stack([even, odd], axis + 1)
        shape = list(v.shape)
        shape[axis] *= 2
        return out.reshape(shape)
    return along(along(a, 1), 2).astype(P.F32, copy=False)


def unpack_masks(pairs: np.ndarray, bits: np.ndarray, n: int, size: int) -> dict:
    """{(image, finding column): bool (S, S)} from :func:`render_rows`' sparse masks."""
    flat = np.unpackbits(bits, axis=1, count=size * size).astype(bool)
    return {(int(i), int(j)): flat[k].reshape(size, size) for k, (i, j) in enumerate(pairs)}
