"""A procedural frontal chest radiograph phantom, rendered for a whole batch at once.

The phantom is an *attenuation map* in 0..1 (bright = dense), drawn in patient coordinates
``(x, y)`` in [-1, 1] (x to the image right = patient's left, y downwards): soft-tissue body,
two lung fields cut by the diaphragm domes (costophrenic angles where they meet), heart and
mediastinum, aortic knob, spine, ribs, clavicles and vascular lung markings. Every anatomical
parameter is a per-image array, so a batch of B images is B-broadcast numpy arithmetic and
never a Python loop over images. Findings (:mod:`.findings`) change the anatomy arrays
(cardiomegaly, emphysema, scoliosis, ...) or add their own layers.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

F32 = np.float32


@dataclass
class Anatomy:
    """Per-image anatomy, each field an array of shape (B,)."""

    cx: np.ndarray  # body centre offset in x (image fraction of the half-width)
    cy: np.ndarray  # body centre offset in y
    scale: np.ndarray  # patient size in the field of view
    rot: np.ndarray  # rotation in radians
    insp: np.ndarray  # inspiration depth: scales lung height
    lung_w: np.ndarray  # half-width of each lung
    heart_w: np.ndarray  # half-width of the heart (cardiothoracic ratio ~ heart_w / thorax)
    dome_r: np.ndarray  # right diaphragm dome height (y of apex, + = lower)
    dome_l: np.ndarray  # left diaphragm dome height
    dome_curv: np.ndarray  # dome curvature (flattened in emphysema)
    lung_dark: np.ndarray  # lung lucency
    mediast_w: np.ndarray  # half-width of the upper mediastinum
    aorta_r: np.ndarray  # radius of the aortic knob
    spine_curve: np.ndarray  # scoliosis amplitude
    rib_phase: np.ndarray  # rib pattern phase

    def take(self, idx) -> "Anatomy":
        return Anatomy(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.cx)


def sample_anatomy(rng: np.random.Generator, n: int, *, scale: float = 1.0,
                   rotation_deg: float = 0.0) -> Anatomy:
    """Draw ``n`` patients' anatomy; ``scale`` and ``rotation_deg`` come from the source's
    positioning (acquisition dial)."""
    u = lambda a, b: rng.uniform(a, b, n).astype(F32)  # noqa: E731
    return Anatomy(
        cx=u(-0.04, 0.04), cy=u(-0.03, 0.05),
        scale=(u(0.9, 1.02) * scale).astype(F32),
        rot=np.deg2rad(rng.normal(0, 2.0 + rotation_deg, n)).astype(F32),
        insp=u(0.85, 1.08), lung_w=u(0.3, 0.36), heart_w=u(0.27, 0.32),
        dome_r=u(0.42, 0.5), dome_l=u(0.48, 0.56), dome_curv=u(0.1, 0.16),
        lung_dark=u(0.3, 0.38), mediast_w=u(0.09, 0.12), aorta_r=u(0.05, 0.065),
        spine_curve=np.zeros(n, F32), rib_phase=u(0, 2 * np.pi),
    )


def patient_grid(a: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates (B, S, S) of every pixel, undoing position, size and rotation."""
    t = (np.arange(size, dtype=F32) + 0.5) / size * 2 - 1
    X, Y = t[None, None, :], t[None, :, None]
    cx, cy, s = a.cx[:, None, None], a.cy[:, None, None], a.scale[:, None, None]
    c, sn = np.cos(a.rot)[:, None, None], np.sin(a.rot)[:, None, None]
    dx, dy = X - cx, Y - cy
    return (c * dx + sn * dy) / s, (-sn * dx + c * dy) / s


def lung_geometry(a: Anatomy, side: np.ndarray):
    """Centre and half-axes of the lung on ``side`` (+1 = patient's right = image left,
    -1 = left), each (B,). The lung top is at ``cy - ry``; its floor is the dome."""
    lcx = np.where(side > 0, F32(-1), F32(1)) * (a.lung_w + F32(0.07))
    ry = 0.55 * a.insp
    lcy = np.full_like(lcx, -0.02)
    return lcx.astype(F32), lcy, a.lung_w.astype(F32), ry.astype(F32)


def dome_y(a: Anatomy, side: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y of the diaphragm dome on ``side`` at patient x (B, S, S)."""
    lcx, _, w, _ = lung_geometry(a, side)
    top = np.where(side > 0, a.dome_r, a.dome_l) * (0.9 + 0.1 * a.insp)
    rel = (x - lcx[:, None, None]) / w[:, None, None]
    return top[:, None, None] - (a.dome_curv[:, None, None]) * (1 - np.minimum(rel * rel, 1.5))


def soft(v: np.ndarray, width: float) -> np.ndarray:
    """Smooth step 0 -> 1 as ``v`` goes from -width to +width (cheap logistic)."""
    out = np.multiply(v, F32(0.5 / width), dtype=F32)
    out += F32(0.5)
    np.clip(out, F32(0.0), F32(1.0), out=out)
    return out


def lung_field(a: Anatomy, x, y, side: np.ndarray, edge: float = 0.02) -> np.ndarray:
    """Soft mask (B, S, S) of one lung field: the ellipse above the dome."""
    lcx, lcy, w, h = lung_geometry(a, side)
    ex = (x - lcx[:, None, None]) / w[:, None, None]
    ey = (y - lcy[:, None, None]) / h[:, None, None]
    inside = soft(1 - (ex * ex + ey * ey), 2 * edge)
    below = soft(dome_y(a, side, x) - y, edge)
    return inside * below


def heart_shape(a: Anatomy, x, y) -> np.ndarray:
    """Soft heart silhouette (B, S, S), slightly to the patient's left."""
    hx = (x - (0.08 + 0.3 * (a.heart_w - 0.27))[:, None, None]) / a.heart_w[:, None, None]
    hy = (y - (0.3 * (0.9 + 0.1 * a.insp))[:, None, None]) / 0.24
    return soft(1 - (hx * hx + hy * hy), 0.08)


def spine_x(a: Anatomy, y) -> np.ndarray:
    """x of the spine's centre line at height y: straight, or an S-curve in scoliosis."""
    return a.spine_curve[:, None, None] * np.sin(np.pi * (y + 0.2))


def render_base(a: Anatomy, x, y, markings_keep: np.ndarray, markings: np.ndarray) -> np.ndarray:
    """The normal chest (B, S, S) in attenuation units. ``markings`` is a smooth noise
    field for the vascular pattern, ``markings_keep`` zeroes it (pneumothorax)."""
    B = lambda v: v[:, None, None]  # noqa: E731
    bx, by = (x / 0.95) ** 2, (y / 1.25) ** 2
    body = soft(1 - (bx * bx + by * by), 0.06)
    A = 0.5 * body
    lung_r = lung_field(a, x, y, np.ones(len(a), F32))
    lung_l = lung_field(a, x, y, -np.ones(len(a), F32))
    lungs = np.maximum(lung_r, lung_l)
    heart = heart_shape(a, x, y)
    med = soft(B(a.mediast_w) - np.abs(x - 0.02), 0.02) * soft(0.3 - y, 0.1) * soft(y + 0.75, 0.05)
    aorta = soft(1 - ((x - 0.1) ** 2 + (y + 0.42) ** 2) / B(a.aorta_r) ** 2, 0.3)
    sx = spine_x(a, y)
    spine = soft(0.06 - np.abs(x - sx), 0.015) * (0.8 + 0.2 * np.cos(y * 45))
    # ribs: bright bands along curves that droop laterally; only visible over the lungs
    rib_y = y - 0.35 * x * x
    ribs = np.clip(np.sin(rib_y * 26 + B(a.rib_phase)) * 2 - 1.2, 0, 1)
    clav = soft(0.025 - np.abs(y + 0.72 - 0.25 * np.abs(x) + 0.12 * x * x), 0.01) * soft(0.7 - np.abs(x), 0.05)
    hilum = soft(1 - ((np.abs(x) - 0.17) ** 2 / 0.04 + (y + 0.02) ** 2 / 0.12), 0.5)
    vessels = (0.5 + 0.5 * markings) * (0.25 + 0.75 * hilum) * markings_keep
    fields_ = lungs * (1 - np.maximum(heart, med))
    A = A - B(a.lung_dark) * fields_ + 0.12 * vessels * fields_
    A = A + 0.16 * heart + 0.14 * med + 0.2 * aorta
    A = A + 0.2 * spine * body + 0.1 * ribs * lungs + 0.16 * clav
    return A


def smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Band-limited noise (n, S, S), roughly unit variance: a ``cells``×``cells`` random
    grid, bilinearly upsampled (vectorised over the batch)."""
    g = rng.standard_normal((n, cells + 1, cells + 1)).astype(F32)
    t = np.linspace(0, cells, size, dtype=F32)
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = (t - i0.astype(F32))[None]
    rows = g[:, i0] * (1 - f[..., None]) + g[:, i0 + 1] * f[..., None]  # (n, S, cells+1)
    return rows[:, :, i0] * (1 - f[:, None, :]) + rows[:, :, i0 + 1] * f[:, None, :]
