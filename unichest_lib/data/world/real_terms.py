"""The real datasets' own terms for each class, where deriving the embedded world's priors
needs them beyond :func:`unichest_lib.data.labels.canonical`: PadChest's label vocabulary and
Open-I's manual MeSH headings (issue #14: the terms the first derivation missed, e.g.
"calcified pleural thickening", "pulmonary mass", "nsg tube"). Read by :mod:`.priors`; the
embedded data cards print both tables.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

#: PadChest label (lower case) -> class. Every label that feeds a class is listed; the rest
#: (e.g. "volume loss", "COPD signs", "interstitial pattern", "hyperinflated lung") are dropped.
PADCHEST_MAP: dict[str, tuple[str, ...]] = {
    "no finding": ("normal",),
    "atelectasis": ("atelectasis", "laminar atelectasis", "lobar atelectasis",
                    "segmental atelectasis", "atelectasis basal", "total atelectasis",
                    "round atelectasis"),
    "cardiomegaly": ("cardiomegaly",),
    "pleural effusion": ("pleural effusion", "loculated pleural effusion"),
    "infiltration": ("infiltrates",),
    "mass": ("mass", "pulmonary mass"),
    "nodule": ("nodule", "multiple nodules"),
    "pneumonia": ("pneumonia", "atypical pneumonia"),
    "pneumothorax": ("pneumothorax",),
    "consolidation": ("consolidation",),
    "edema": ("pulmonary edema",),
    "emphysema": ("emphysema",),
    "fibrosis": ("pulmonary fibrosis",),
    "pleural thickening": ("pleural thickening", "apical pleural thickening",
                           "calcified pleural thickening"),
    "hernia": ("hiatal hernia",),
    "fracture": ("fracture", "rib fracture", "callus rib fracture", "vertebral fracture",
                 "clavicle fracture", "humeral fracture"),
    "support devices": ("pacemaker", "dual chamber device", "single chamber device",
                        "electrical device", "catheter", "central venous catheter",
                        "central venous catheter via jugular vein",
                        "central venous catheter via subclavian vein",
                        "central venous catheter via umbilical vein",
                        "reservoir central venous catheter", "nsg tube", "endotracheal tube",
                        "tracheostomy tube", "chest drain tube"),
    "calcification": ("calcified granuloma",),
    "tuberculosis": ("tuberculosis", "tuberculosis sequelae"),
    "scoliosis": ("scoliosis",),
    "elevated hemidiaphragm": ("hemidiaphragm elevation",),
}

#: Open-I MeSH *major* heading (the manual MeSH coding, lower case, the part before the first
#: "/") -> class; a key "heading/word" needs that word among the heading's qualifiers
#: ("Thickening/pleura/apex" is pleural thickening). Headings not listed are dropped (e.g.
#: "cardiac shadow", "airspace disease", "pulmonary congestion", "volume loss", "granuloma").
OPENI_MESH: dict[str, tuple[str, ...]] = {
    "no finding": ("normal",),
    "atelectasis": ("pulmonary atelectasis",),
    "cardiomegaly": ("cardiomegaly",),
    "pleural effusion": ("pleural effusion",),
    "infiltration": ("infiltrate",),
    "mass": ("mass",),
    "nodule": ("nodule",),
    "pneumonia": ("pneumonia",),
    "pneumothorax": ("pneumothorax",),
    "consolidation": ("consolidation",),
    "edema": ("pulmonary edema",),
    "emphysema": ("emphysema", "pulmonary emphysema", "bullous emphysema"),
    "fibrosis": ("pulmonary fibrosis", "fibrosis"),
    "pleural thickening": ("thickening/pleura",),
    "hernia": ("hernia, hiatal", "hernia, diaphragmatic"),
    "lung opacity": ("opacity",),
    "fracture": ("fractures, bone",),
    "support devices": ("catheters, indwelling", "implanted medical device", "medical device",
                        "tube, inserted"),
    "interstitial lung disease": ("lung diseases, interstitial",),
    "calcification": ("calcified granuloma",),
    "tuberculosis": ("tuberculosis",),
    "scoliosis": ("scoliosis",),
    "elevated hemidiaphragm": ("diaphragm/elevated",),
}


__all__ = ["OPENI_MESH", "PADCHEST_MAP"]
