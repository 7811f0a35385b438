"""The class vocabulary: canonical class names, their synonyms, and the label space of each
source of the embedded world (paper Section III-A).

A sample is ``(x, Y, l, t)``: its label vector ``Y`` lives in the *union* label space of all
pre-training sources, and a boolean *mask* says which classes its source observes. A class
that a source does not annotate is **missing**, not negative, and the multi-label loss must
ignore it (paper Section III-C2). This module is the one place where class names and their
synonyms are written down, as data, and where the embedded sources' label spaces are
(:data:`EMBEDDED_LABEL_SPACES`). A *real* dataset's label space is not written anywhere: it
follows from its own label list through :func:`canonical` (:mod:`unichest_lib.data.real.
harmonise`), and differs from its embedded namesake (real Open-I gains and loses classes).
Ask :mod:`unichest_lib.data.label_spaces` for either world's.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

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

#: Which classes each *embedded* source observes (its label space). Order = the source's own.
EMBEDDED_LABEL_SPACES: dict[str, tuple[str, ...]] = {
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
                       "unichest_lib.data.labels.SYNONYMS")
    return _LOOKUP[key]


def embedded_label_space(source: str) -> tuple[str, ...]:
    """The label space of an *embedded* source; a clear error for an unknown source."""
    if source not in EMBEDDED_LABEL_SPACES:
        raise KeyError(f"unknown source {source!r}; known sources: "
                       f"{', '.join(EMBEDDED_LABEL_SPACES)}")
    return EMBEDDED_LABEL_SPACES[source]


def in_union_order(classes) -> tuple[str, ...]:
    """The distinct ``classes`` in :data:`ALL_CLASSES` order (the paper's ``c`` classes)."""
    seen = set(classes)
    return tuple(c for c in ALL_CLASSES if c in seen)


__all__ = ["ALL_CLASSES", "EMBEDDED_LABEL_SPACES", "PRETRAIN_CLASSES", "SYNONYMS",
           "UNSEEN_CLASSES", "canonical", "embedded_label_space", "in_union_order"]
