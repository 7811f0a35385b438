"""Which classes a source observes, in either world: the one label-space API.

Every question "which classes does this source label?" goes through here with the data
configuration (``cfg.data``): ``"embedded"`` answers from the embedded world's label spaces
(:data:`unichest_lib.data.labels.EMBEDDED_LABEL_SPACES`); anything else (the path of a
real-data YAML file) from the real dataset's own label list, harmonised onto the canonical
classes (:func:`unichest_lib.data.real.harmonise.observed_classes`). The two differ: real
Open-I, for example, labels classes its embedded namesake does not, and the other way round.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import labels

EMBEDDED = "embedded"


def source_classes(source: str, data: str) -> tuple[str, ...]:
    """The canonical classes ``source`` observes, in its own order (embedded) or in union
    order (real), for the data configuration ``data`` (``cfg.data``)."""
    if data == EMBEDDED:
        return labels.embedded_label_space(source)
    from .real.harmonise import observed_classes

    return observed_classes(source)


def union_classes(sources: Sequence[str], data: str) -> tuple[str, ...]:
    """The union label space of ``sources`` in :data:`~unichest_lib.data.labels.ALL_CLASSES`
    order (the paper's ``c`` classes)."""
    return labels.in_union_order(c for s in sources for c in source_classes(s, data))


def observed_mask(source: str, classes: Sequence[str], data: str) -> np.ndarray:
    """Boolean vector over ``classes``: True where ``source`` annotates that class."""
    own = set(source_classes(source, data))
    return np.array([c in own for c in classes], dtype=bool)


def label_matrix(sources: Sequence[str], data: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The union classes of ``sources`` and a (source × class) observed-mask matrix."""
    classes = union_classes(sources, data)
    return classes, np.stack([observed_mask(s, classes, data) for s in sources])


__all__ = ["EMBEDDED", "label_matrix", "observed_mask", "source_classes", "union_classes"]
