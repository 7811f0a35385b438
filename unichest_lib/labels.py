"""The union label space and each source's view of it (paper Section III-A).

A sample is ``(x, Y, l, t)``: its label vector ``Y`` lives in the *union* label space of all
pre-training sources, and a boolean *mask* says which classes its source observes. A class
that a source does not annotate is **missing**, not negative, and the multi-label loss must
ignore it (paper Section III-C2). This module is the one place where class names, their
synonyms and each source's label space are written down, as data.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import numpy as np

#: Canonical class names of the embedded world, in union order. The names double as the
#: text queries of the query networks, so they are plain lower-case English.
PRETRAIN_CLASSES: tuple[str, ...] = (
    # ChestX-ray14
    "atelectasis", "cardiomegaly", "pleural effusion", "infiltration", "mass", "nodule",
    "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
    "pleural thickening", "hernia",
    # CheXpert extras
    "enlarged cardiomediastinum", "lung opacity", "lung lesion", "fracture", "support devices",
    "pleural other", "no finding",
    # VinDr-CXR extras
    "aortic enlargement", "interstitial lung disease", "calcification",
)
#: Classes that *no* pre-training source labels: only downstream sources observe them, so
#: they can be reached only by zero-shot text queries (Table V, "unseen").
UNSEEN_CLASSES: tuple[str, ...] = ("tuberculosis", "scoliosis", "elevated hemidiaphragm")
#: Every class the embedded world can render.
ALL_CLASSES: tuple[str, ...] = PRETRAIN_CLASSES + UNSEEN_CLASSES

_CXR14 = PRETRAIN_CLASSES[:14]
_CHEXPERT = (
    "no finding", "enlarged cardiomediastinum", "cardiomegaly", "lung opacity", "lung lesion",
    "edema", "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural effusion",
    "pleural other", "fracture", "support devices",
)
_VINDR = (
    "aortic enlargement", "atelectasis", "calcification", "cardiomegaly", "consolidation",
    "interstitial lung disease", "infiltration", "lung opacity", "nodule", "mass",
    "pleural effusion", "pleural thickening", "pneumothorax", "fibrosis", "no finding",
)

#: Which classes each embedded source observes (its label space). Order = the source's own.
SOURCE_CLASSES: dict[str, tuple[str, ...]] = {
    # pre-training (Multi-CXR-like); MIMIC-like labels are report-mined with CheXpert's labeller
    "mimic": _CHEXPERT,
    "chestxray14": _CXR14,
    "chexpert": _CHEXPERT,
    "vindr": _VINDR,
    # downstream
    "shenzhen": ("tuberculosis",),
    "openi": _CXR14,
    "siim": ("pneumothorax",),
    "padchest": (
        "pneumonia", "pleural effusion", "cardiomegaly", "atelectasis", "nodule", "emphysema",
        "fracture", "tuberculosis", "scoliosis", "elevated hemidiaphragm",
    ),
    "chestxdet10": (
        "atelectasis", "calcification", "consolidation", "pleural effusion", "emphysema",
        "fibrosis", "fracture", "mass", "nodule", "pneumothorax",
    ),
}

#: Other spellings of each class, as found in dataset label lists and in reports.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectatic", "collapse", "volume loss"),
    "cardiomegaly": ("enlarged heart", "cardiac enlargement", "heart is enlarged"),
    "pleural effusion": ("effusion", "pleural fluid", "effusions"),
    "infiltration": ("infiltrate", "infiltrates"),
    "mass": ("masses", "lung mass", "lung tumor", "tumor", "nodule/mass"),
    "nodule": ("nodules", "nodular opacity", "nodule/mass"),
    "pneumonia": ("infection", "pneumonic"),
    "pneumothorax": ("pneumothoraces", "collapsed lung"),
    "consolidation": ("consolidations", "airspace consolidation"),
    "edema": ("oedema", "pulmonary edema", "vascular congestion", "interstitial edema"),
    "emphysema": ("hyperinflation", "hyperinflated lungs", "copd"),
    "fibrosis": ("pulmonary fibrosis", "fibrotic change"),
    "pleural thickening": ("pleural_thickening", "thickened pleura"),
    "hernia": ("hiatal hernia", "hiatus hernia"),
    "enlarged cardiomediastinum": ("widened mediastinum", "mediastinal widening"),
    "lung opacity": ("opacity", "opacities", "airspace opacity"),
    "lung lesion": ("lesion", "lesions", "other lesion"),
    "fracture": ("fractures", "rib fracture", "clavicle fracture", "fractured"),
    "support devices": ("support device", "tube", "line", "catheter", "pacemaker", "device"),
    "pleural other": ("pleural abnormality",),
    "no finding": ("normal", "no acute findings", "no acute cardiopulmonary process"),
    "aortic enlargement": ("enlarged aorta", "aortic ectasia", "tortuous aorta"),
    "interstitial lung disease": ("ild", "interstitial disease", "reticular opacities"),
    "calcification": ("calcified", "calcifications", "calcified granuloma"),
    "tuberculosis": ("tb", "pulmonary tuberculosis", "cavitary lesion"),
    "scoliosis": ("spinal curvature", "curved spine"),
    "elevated hemidiaphragm": ("hemidiaphragm elevation", "raised hemidiaphragm"),
}


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


_LOOKUP: dict[str, str] = {}
for _c in ALL_CLASSES:
    _LOOKUP[_norm(_c)] = _c
for _c, _syns in SYNONYMS.items():
    for _s in _syns:
        _LOOKUP.setdefault(_norm(_s), _c)


def canonical(name: str) -> str:
    """The canonical union class for a dataset's label name or a synonym.

    >>> canonical("Pleural_Thickening")
    'pleural thickening'

    Raises ``KeyError`` naming the label when nothing matches.
    """
    key = _norm(name)
    if key not in _LOOKUP:
        raise KeyError(f"label {name!r} has no class in the union label space; add it to "
                       "unichest_lib.labels.SYNONYMS")
    return _LOOKUP[key]


def source_classes(source: str) -> tuple[str, ...]:
    """The label space of an embedded source; a clear error for an unknown source."""
    if source not in SOURCE_CLASSES:
        raise KeyError(f"unknown source {source!r}; known sources: {', '.join(SOURCE_CLASSES)}")
    return SOURCE_CLASSES[source]


def union_classes(sources) -> tuple[str, ...]:
    """The union label space of several sources, in :data:`ALL_CLASSES` order (paper's ``c``)."""
    seen = {c for s in sources for c in source_classes(s)}
    return tuple(c for c in ALL_CLASSES if c in seen)


def observed_mask(source: str, classes) -> np.ndarray:
    """Boolean vector over ``classes``: True where ``source`` annotates that class."""
    own = set(source_classes(source))
    return np.array([c in own for c in classes], dtype=bool)


def label_matrix(sources) -> "tuple[tuple[str, ...], np.ndarray]":
    """The union classes of ``sources`` and a (source × class) observed-mask matrix."""
    classes = union_classes(sources)
    return classes, np.stack([observed_mask(s, classes) for s in sources])
