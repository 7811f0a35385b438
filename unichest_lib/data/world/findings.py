"""Finding renderers: what each class looks like on the phantom, with its ground-truth mask.

Every class of :data:`labels.ALL_CLASSES` except "no finding" (which is the absence of all
others) has a renderer. A renderer gets the rows of the batch that have the finding and
returns an attenuation layer and a boolean mask for just those rows, vectorised over them.
Shapes follow the radiology literature, simplified:

* effusion: basal fluid with a meniscus rising laterally, blunting the costophrenic angle;
* cardiomegaly: heart widened to a cardiothoracic ratio above 0.5;
* pneumothorax: an apico-lateral rim with a thin pleural line and no lung markings beyond it;
* edema: bilateral perihilar ("bat-wing") haze; nodule (< 3 cm) vs mass (> 3 cm) by size;
* devices: thin bright tubes and lines, a pacemaker box with its lead;
* tuberculosis: upper-zone cavities (lucent centre, opaque wall) in patchy opacity.

Anatomical findings (cardiomegaly, emphysema, scoliosis, elevated hemidiaphragm, enlarged
cardiomediastinum, aortic enlargement) change the :class:`~.phantom.Anatomy` before the base
chest is drawn (:func:`modify_anatomy`); their mask is the changed structure.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import phantom as P
from .phantom import F32, soft

MASK_LEVEL = 0.35  # a pixel belongs to a finding where its soft shape exceeds this


@dataclass
class Params:
    """Per-image finding parameters (B,), drawn once per image and shared by renderers."""

    side: np.ndarray  # +1 right, -1 left: the side of one-sided findings
    u: np.ndarray  # horizontal position inside the lung, -1 medial .. 1 lateral
    v: np.ndarray  # vertical position inside the lung, -1 apex .. 1 base
    size: np.ndarray  # size multiplier (source appearance x per-image jitter)
    density: np.ndarray  # opacity multiplier
    texture: np.ndarray  # 0 smooth .. 1 mottled
    y_shift: np.ndarray  # source-specific vertical shift
    device_kind: np.ndarray  # bit field: 1 ET tube, 2 central line, 4 pacemaker

    def take(self, idx) -> "Params":
        return Params(**{k: v[idx] for k, v in self.__dict__.items()})


def params_for(side, u, v, jitter, device_kind, app) -> Params:
    """Finding parameters of some rows from their layout arrays (see
    :func:`.population.draw_layout`) under a source :class:`~.sources.Appearance`."""
    return Params(
        side=side, u=u, v=v,
        size=(app.size * (1 + 0.2 * jitter[:, 0])).astype(F32),
        density=(app.density * (1 + 0.2 * jitter[:, 1])).astype(F32),
        texture=np.clip(app.texture + 0.15 * jitter[:, 2], 0, 1).astype(F32),
        y_shift=np.full(len(side), app.y_shift, F32),
        device_kind=device_kind,
    )


# --- anatomical findings -------------------------------------------------------------------
def modify_anatomy(a: P.Anatomy, has: dict[str, np.ndarray], p: dict[str, Params]) -> None:
    """Change the anatomy in place for rows with anatomical findings. ``has`` maps a class to
    a bool array (B,), ``p`` maps each class of :data:`ANATOMICAL` to its Params (B,)."""
    no = np.zeros(len(a), bool)
    k, q = has.get("cardiomegaly", no), p["cardiomegaly"]
    a.heart_w[k] = (a.heart_w[k] * (1.3 + 0.15 * q.size[k])).astype(F32)  # CTR ~0.5 -> 0.65
    k = has.get("emphysema", no)
    a.insp[k] *= F32(1.12)
    a.dome_curv[k] *= F32(0.35)
    a.lung_dark[k] += F32(0.08)
    k, q = has.get("scoliosis", no), p["scoliosis"]
    a.spine_curve[k] = (q.side[k] * (0.06 + 0.04 * q.size[k])).astype(F32)
    k, q = has.get("elevated hemidiaphragm", no), p["elevated hemidiaphragm"]
    raise_by = (0.12 + 0.05 * q.size[k]).astype(F32)
    a.dome_r[k] -= np.where(q.side[k] > 0, raise_by, 0).astype(F32)
    a.dome_l[k] -= np.where(q.side[k] < 0, raise_by, 0).astype(F32)
    k, q = has.get("enlarged cardiomediastinum", no), p["enlarged cardiomediastinum"]
    a.mediast_w[k] = (a.mediast_w[k] * (1.7 + 0.3 * q.size[k])).astype(F32)
    k, q = has.get("aortic enlargement", no), p["aortic enlargement"]
    a.aorta_r[k] = (a.aorta_r[k] * (1.6 + 0.3 * q.size[k])).astype(F32)


def anatomy_masks(a0: P.Anatomy, a: P.Anatomy, x, y, name: str) -> np.ndarray:
    """Mask of an anatomical finding: the changed structure (rows of the subset)."""
    B = lambda v: v[:, None, None]  # noqa: E731
    if name == "cardiomegaly":
        return P.heart_shape(a, x, y) > 0.5
    if name == "emphysema":
        ones = np.ones(len(a), F32)
        return np.maximum(P.lung_field(a, x, y, ones), P.lung_field(a, x, y, -ones)) > 0.5
    if name == "scoliosis":
        return np.abs(x - P.spine_x(a, y)) < 0.08
    if name == "elevated hemidiaphragm":
        side = np.where(a.dome_r < a0.dome_r, F32(1), F32(-1))
        lcx, _, w, _ = P.lung_geometry(a, side)
        within = np.abs(x - B(lcx)) < B(w)
        return within & (y > P.dome_y(a, side, x) - 0.02) & (y < P.dome_y(a0, side, x) + 0.02)
    if name == "enlarged cardiomediastinum":
        return (np.abs(x - 0.02) < B(a.mediast_w)) & (y > -0.75) & (y < 0.2)
    if name == "aortic enlargement":
        return ((x - 0.1) ** 2 + (y + 0.42) ** 2) < B(a.aorta_r) ** 2 * 1.2
    raise KeyError(name)


ANATOMICAL = ("cardiomegaly", "emphysema", "scoliosis", "elevated hemidiaphragm",
              "enlarged cardiomediastinum", "aortic enlargement")


# --- focal and diffuse findings ------------------------------------------------------------
def _at(a: P.Anatomy, p: Params, u, v, side=None):
    """Patient coordinates (B,) of lung-relative position (u lateral, v downward)."""
    side = p.side if side is None else side
    lcx, lcy, w, h = P.lung_geometry(a, side)
    lateral = np.where(side > 0, F32(-1), F32(1))
    return lcx + lateral * u * w * 0.8, lcy + (v + p.y_shift) * h * 0.75


def pixel_pitch(x: np.ndarray) -> np.ndarray:
    """Width of one pixel in patient units, per image (B,)."""
    return np.abs(x[:, 0, 1] - x[:, 0, 0]) + np.abs(x[:, 1, 0] - x[:, 0, 0])


def _blob(x, y, cx, cy, rx, ry):
    B = lambda v: v[:, None, None]  # noqa: E731
    dx, dy = (x - B(cx)) / B(rx), (y - B(cy)) / B(ry)
    return soft(1 - (dx * dx + dy * dy), 0.35)


def _mottle(noise, p: Params):
    t = p.texture[:, None, None]
    return np.clip(1 - t + t * (0.6 + 0.8 * noise), 0, 1.5)


def _lungs(a, x, y):
    ones = np.ones(len(a), F32)
    return np.maximum(P.lung_field(a, x, y, ones), P.lung_field(a, x, y, -ones))


def _focal(r_lo, r_hi, dens, v_lo=-0.5, v_hi=0.6, aspect=1.0, mottle=False):
    def render(a, p, x, y, noise):
        u = np.clip(p.u, -0.3, 0.5)
        v = v_lo + (p.v + 0.5) / 1.1 * (v_hi - v_lo)
        cx, cy = _at(a, p, u, v)
        r = (r_lo + (r_hi - r_lo) * (p.size - 0.8) / 0.6) * np.ones_like(p.size)
        r = np.maximum(r, 1.5 * pixel_pitch(x))  # never smaller than a pixel or two
        shape = _blob(x, y, cx, cy, r, r * aspect)
        layer = shape * (_mottle(noise, p) if mottle else 1)
        return dens * p.density[:, None, None] * layer, shape > MASK_LEVEL
    return render


def effusion(a, p, x, y, noise):
    """Basal fluid: opaque below a meniscus that rises toward the lateral chest wall."""
    B = lambda v: v[:, None, None]  # noqa: E731
    lcx, lcy, w, h = P.lung_geometry(a, p.side)
    lateral = (x - B(lcx)) * B(np.where(p.side > 0, F32(-1), F32(1))) / B(w)  # -1..1
    level = P.dome_y(a, p.side, x) - B(0.12 + 0.12 * p.size) + 0.12 * np.clip(lateral, -1, 1) ** 2 * -1
    lung = P.lung_field(a, x, y, p.side, edge=0.03)
    below = soft(y - level, 0.03) * (np.abs(x - B(lcx)) < B(w) * 1.05)
    fluid = below * lung
    return 0.45 * B(p.density) * fluid, fluid > 0.5


def _lung_frame(a, p, x, y):
    """Coordinates relative to the affected lung's ellipse: (ex, ey) scaled to its half-axes,
    the elliptic radius rho (1 on the lung border) and ``lateral`` (+1 towards the chest wall)."""
    B = lambda v: v[:, None, None]  # noqa: E731
    lcx, lcy, w, h = P.lung_geometry(a, p.side)
    ex, ey = (x - B(lcx)) / B(w), (y - B(lcy)) / B(h)
    rho = np.sqrt(ex * ex + ey * ey)
    lateral = ex * B(np.where(p.side > 0, F32(-1), F32(1)))
    return ex, ey, rho, lateral


def pneumothorax(a, p, x, y, noise):
    """Apico-lateral air rim: darker, no markings, a thin bright visceral pleural line."""
    B = lambda v: v[:, None, None]  # noqa: E731
    ex, ey, rho, lateral = _lung_frame(a, p, x, y)
    toward = np.clip(0.6 * lateral - 0.8 * ey, 0, 1)  # upper-lateral direction weight
    depth = B(0.12 + 0.12 * p.size) * toward
    rim = (rho < 1.0) & (rho > 1.0 - depth) & (P.dome_y(a, p.side, x) > y)
    line = soft(0.012 - np.abs(rho - (1.0 - depth)), 0.006) * (toward > 0.15) * (rho < 1)
    layer = -0.12 * rim + 0.12 * line
    return layer.astype(F32), rim


def edema(a, p, x, y, noise):
    """Bilateral perihilar haze with a mottled texture."""
    B = lambda v: v[:, None, None]  # noqa: E731
    r = 0.2 * B(p.size)
    hz = soft(1 - (((np.abs(x) - 0.25) / r) ** 2 + ((y + 0.0) / (1.3 * r)) ** 2), 0.6)
    layer = hz * _lungs(a, x, y) * _mottle(noise, p)
    return 0.25 * B(p.density) * layer, layer > MASK_LEVEL * 0.6


def _reticular(upper: bool, dens: float):
    def render(a, p, x, y, noise):
        B = lambda v: v[:, None, None]  # noqa: E731
        lines = soft(0.15 - np.abs(np.sin(x * 60 + 3 * noise) * np.sin(y * 55 - 2 * noise)), 0.1)
        zone = soft((-y - 0.05) if upper else (y - 0.05), 0.08)
        region = zone * _lungs(a, x, y)
        return dens * B(p.density) * lines * region, region > 0.5
    return render


def pleural_band(thick: float, dens: float, cap: bool):
    def render(a, p, x, y, noise):
        B = lambda v: v[:, None, None]  # noqa: E731
        ex, ey, rho, lateral = _lung_frame(a, p, x, y)
        where = (-ey > 0.6) if cap else ((lateral > 0.3) & (np.abs(ey - B(p.v) * 0.5) < 0.35))
        band = (rho < 1.02) & (rho > 1 - thick * B(p.size)) & where
        return dens * B(p.density) * band, band
    return render


def hernia(a, p, x, y, noise):
    """Retrocardiac round opacity with a gas bubble (hiatus hernia)."""
    cy = np.minimum(a.dome_l, a.dome_r) - 0.08
    cx = np.full_like(cy, 0.05)
    r = 0.08 * p.size
    shape = _blob(x, y, cx, cy, r, r)
    gas = _blob(x, y, cx, cy - 0.3 * r, 0.5 * r, 0.3 * r)
    return 0.25 * p.density[:, None, None] * (shape - 0.8 * gas), shape > MASK_LEVEL


def fracture(a, p, x, y, noise):
    """A lateral rib break: a dark gap across the rib with a little bright callus."""
    cx, cy = _at(a, p, np.full_like(p.u, 0.85), p.v)
    gap = _blob(x, y, cx, cy, np.full_like(cx, 0.012), np.full_like(cx, 0.05))
    callus = _blob(x, y, cx + 0.03, cy, np.full_like(cx, 0.025), np.full_like(cx, 0.04))
    box = _blob(x, y, cx + 0.01, cy, np.full_like(cx, 0.05), np.full_like(cx, 0.07))
    return (0.25 * callus - 0.2 * gap).astype(F32), box > MASK_LEVEL


def tuberculosis(a, p, x, y, noise):
    """Upper-zone cavity: opaque wall, lucent centre, in patchy surrounding opacity."""
    B = lambda v: v[:, None, None]  # noqa: E731
    cx, cy = _at(a, p, np.clip(p.u, -0.2, 0.5), -0.75 + 0.2 * p.v)
    r = 0.1 * p.size
    patch = _blob(x, y, cx, cy, 1.6 * r, 1.3 * r) * _mottle(noise, p)
    wall = _blob(x, y, cx, cy, r, r)
    hole = _blob(x, y, cx, cy, 0.5 * r, 0.5 * r)
    layer = 0.18 * patch + 0.2 * wall - 0.35 * hole
    return B(p.density) * layer, np.maximum(patch, wall) > MASK_LEVEL


def support_devices(a, p, x, y, noise):
    """ET tube down the midline, a central line from the clavicle, a pacemaker box."""
    k = p.device_kind[:, None, None]
    tube = ((k & 1) > 0) * soft(0.015 - np.abs(x - 0.01 - 0.02 * y), 0.006) * (y > -1) * (y < -0.35)
    cl_x = -0.35 + 0.35 * np.clip((y + 0.7) / 0.5, 0, 1) ** 0.7
    line = ((k & 2) > 0) * soft(0.012 - np.abs(x - cl_x), 0.005) * (y > -0.72) * (y < -0.1)
    box = ((k & 4) > 0) * ((np.abs(x - 0.45) < 0.08) & (np.abs(y + 0.62) < 0.06))
    lead_x = 0.45 - 0.4 * np.clip((y + 0.56) / 0.8, 0, 1)
    lead = ((k & 4) > 0) * soft(0.011 - np.abs(x - lead_x), 0.005) * (y > -0.56) * (y < 0.25)
    layer = 0.5 * np.maximum(np.maximum(tube, line), np.maximum(lead, 1.5 * box))
    return layer.astype(F32), layer > 0.15


RENDERERS = {
    "atelectasis": _focal(0.08, 0.13, 0.3, 0.4, 0.8, aspect=0.35),  # plate-like, basal
    "pleural effusion": effusion,
    "infiltration": _focal(0.12, 0.2, 0.14, mottle=True),
    "mass": _focal(0.08, 0.14, 0.38, mottle=False),  # > 3 cm
    "nodule": _focal(0.03, 0.055, 0.38),  # < 3 cm
    "pneumonia": _focal(0.1, 0.16, 0.3, 0.1, 0.8, mottle=True),
    "pneumothorax": pneumothorax,
    "consolidation": _focal(0.1, 0.15, 0.4, -0.2, 0.8, aspect=1.2, mottle=True),
    "edema": edema,
    "fibrosis": _reticular(upper=True, dens=0.18),
    "pleural thickening": pleural_band(0.06, 0.28, cap=True),
    "hernia": hernia,
    "lung opacity": _focal(0.08, 0.14, 0.22, mottle=True),
    "lung lesion": _focal(0.04, 0.07, 0.32, mottle=True),
    "fracture": fracture,
    "support devices": support_devices,
    "pleural other": pleural_band(0.05, 0.3, cap=False),
    "interstitial lung disease": _reticular(upper=False, dens=0.16),
    "calcification": _focal(0.02, 0.03, 0.7),
    "tuberculosis": tuberculosis,
}
