"""Where the lung fields of a source's radiographs lie, from the phantom's anatomy model.

The world does not keep each image's anatomy: :func:`.render.render_rows` draws it while it
renders a chunk and keeps only the pixels and the lesion masks (the render cache holds
nothing else). Replaying those draws would mean rendering the chunk again. So the lung field
of an individual image is not available, and :func:`lung_field_centroids` gives the next best
thing: the mean centroid of each lung field (:func:`.phantom.lung_field`, right and left) of
anatomies drawn the way the source draws them (:func:`.phantom.sample_anatomy` with the
source's patient size and rotation), a fixed sample of :data:`N_DRAWS` from a seeded
generator. Findings that reshape the chest (emphysema, scoliosis, ...) are not applied: the
centroid is that of the normal chest.

Introduced in ``notebooks/04_evaluate.ipynb`` (the lung-centre grounding baseline).
"""

from __future__ import annotations

import numpy as np

from ... import config as C
from . import phantom as P
from . import sources as S

#: Anatomies averaged by :func:`lung_field_centroids` (the centroid moves by well under a
#: pixel between two such samples at 128 px).
N_DRAWS = 256
#: Stream id of the generator (apart from the world's own streams, which use 1 to 100+).
_STREAM = 901


def lung_masks(anatomy: P.Anatomy, size: int) -> np.ndarray:
    """Bool (B, 2, size, size): pixels where the soft mask of the patient's right lung (image
    left, index 0) or left lung (index 1) exceeds one half."""
    x, y = P.patient_grid(anatomy, size)
    ones = np.ones(len(anatomy), P.F32)
    return np.stack([P.lung_field(anatomy, x, y, side * ones) > 0.5 for side in (1, -1)], 1)


def lung_field_centroids(cfg: C.Config, source: str, *, n: int = N_DRAWS,
                         batch: int = 32) -> tuple[tuple[float, float], tuple[float, float]]:
    """(row, column) in pixels of ``cfg.image_size`` of the mean centroid of the patient's
    right lung field (image left) and of the left one, over ``n`` phantom anatomies drawn as
    ``source`` draws them (its acquisition at ``cfg``'s dials)."""
    if source not in S.SPECS:
        raise ValueError(f"unknown embedded source {source!r}; known: {', '.join(S.SPECS)}")
    if n < 1:
        raise ValueError(f"n = {n} anatomies: draw at least one")
    acq = S.effective(source, S.dials(cfg.heterogeneity, C.dial_values(cfg.dials))).acquisition
    rng = np.random.default_rng([cfg.world_seed, C.ALL_SOURCES.index(source), _STREAM])
    size = int(cfg.image_size)
    rows = np.arange(size, dtype=np.float64)[:, None]
    cols = np.arange(size, dtype=np.float64)[None, :]
    cy, cx = [], []
    for start in range(0, n, batch):
        a = P.sample_anatomy(rng, min(batch, n - start), scale=acq.scale,
                             rotation_deg=acq.rotation)
        m = lung_masks(a, size).astype(np.float64)  # (b, 2, S, S)
        area = m.sum((2, 3))
        if (area == 0).any():
            raise ValueError(f"a phantom of {source!r} at {size} px has an empty lung field")
        cy.append((m * rows).sum((2, 3)) / area)
        cx.append((m * cols).sum((2, 3)) / area)
    cy, cx = np.concatenate(cy).mean(0), np.concatenate(cx).mean(0)
    return (float(cy[0]), float(cx[0])), (float(cy[1]), float(cx[1]))


__all__ = ["N_DRAWS", "lung_field_centroids", "lung_masks"]
