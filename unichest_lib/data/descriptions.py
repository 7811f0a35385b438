"""Short visual descriptions of each class, for zero-shot queries by description.

MedKLIP (Section 3.2 and its inference protocol) replaces a disease name the model never saw
by a brief description of what the finding *looks like* on a radiograph, so that the text
encoder can relate it to words it did see in training (opacity, cavity, curve, lung apex...).
UniChest's Table V / Figs. 5-6 query unseen PadChest classes the same way. The sentences
below are plain descriptions of the radiographic appearance, written for this project; they
are data, so a reader can change them and re-run the zero-shot chapter.

:data:`TEMPLATES` turn a class into several phrasings of the same query (:func:`variants`),
for ``cfg.query_text = "ensemble"``: the query networks train on a phrasing drawn at random
each step and are queried at test time by the mean of the phrasings' embeddings (a prompt
ensemble, as CLIP-style zero-shot classifiers use). The templates were written for this
project; they mix the bare name, sentences a report could contain, and the description.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

from . import labels

DESCRIPTIONS: dict[str, str] = {
    "atelectasis": "collapsed lung tissue seen as a dense band or wedge with volume loss "
                   "and shifted fissures",
    "cardiomegaly": "an enlarged heart shadow wider than half of the chest",
    "pleural effusion": "fluid at the lung base blunting the costophrenic angle with a "
                        "curved meniscus",
    "infiltration": "patchy hazy opacities spread through the lung fields",
    "mass": "a large round dense opacity in the lung, more than three centimetres",
    "nodule": "a small round well defined spot of increased density in the lung",
    "pneumonia": "an area of airspace opacity from infection, often in one lobe",
    "pneumothorax": "air between lung and chest wall: a thin pleural line with no lung "
                    "markings beyond it",
    "consolidation": "a dense homogeneous opacity filling the airspaces of a lobe, with air "
                     "bronchograms",
    "edema": "diffuse hazy opacities around both hila with thickened interstitial lines",
    "emphysema": "hyperlucent overinflated lungs with flattened diaphragms",
    "fibrosis": "coarse reticular lines and scarring with loss of lung volume",
    "pleural thickening": "a thickened pleural stripe along the chest wall",
    "hernia": "a gas containing structure behind the heart above the diaphragm",
    "enlarged cardiomediastinum": "a widened mediastinal silhouette in the centre of the chest",
    "lung opacity": "an area of the lung that is whiter than normal",
    "lung lesion": "a focal abnormal opacity in the lung",
    "fracture": "a break or step in the contour of a rib or clavicle",
    "support devices": "tubes, lines or a pacemaker seen as thin bright artificial objects",
    "pleural other": "an abnormality of the pleura other than effusion or thickening",
    "no finding": "clear lungs, a normal heart size and sharp angles",
    "aortic enlargement": "a widened or bulging aortic knob at the upper left mediastinum",
    "interstitial lung disease": "diffuse fine reticular and nodular lines through both lungs",
    "calcification": "very bright dense spots of calcium in the lung or vessels",
    "tuberculosis": "patchy opacities and cavities in the upper lobes near the lung apex, "
                    "with scarring",
    "scoliosis": "a spine that curves sideways instead of running straight down the middle",
    "elevated hemidiaphragm": "one side of the diaphragm sits higher than the other, raising "
                              "the lung base",
}


#: The phrasings of one class for the ensemble queries: ``{name}`` is the class name,
#: ``{description}`` its entry of :data:`DESCRIPTIONS`. The first is the bare name and the
#: second the bare description, so the ensemble contains both single-text query modes.
TEMPLATES: tuple[str, ...] = (
    "{name}",
    "{description}",
    "a chest x-ray showing {name}",
    "{name} is seen on this radiograph",
    "findings consistent with {name}",
    "a radiograph with {description}",
)


def describe(name: str) -> str:
    """The visual description of class ``name`` (any synonym accepted via
    :func:`unichest_lib.data.labels.canonical`); a clear error when there is none."""
    try:
        key = labels.canonical(name)
    except KeyError:
        key = name
    if key not in DESCRIPTIONS:
        raise KeyError(f"no description for class {name!r}; add one to "
                       "unichest_lib.data.descriptions.DESCRIPTIONS")
    return DESCRIPTIONS[key]


def describe_all(names: Sequence[str]) -> list[str]:
    """Descriptions of several classes, in order."""
    return [describe(n) for n in names]


def variants(name: str) -> tuple[str, ...]:
    """Every phrasing of class ``name`` (one per :data:`TEMPLATES` entry, in order), with
    the canonical name and its description filled in."""
    try:
        key = labels.canonical(name)
    except KeyError:
        key = name
    desc = describe(key)
    return tuple(t.format(name=key, description=desc) for t in TEMPLATES)


__all__ = ["DESCRIPTIONS", "TEMPLATES", "describe", "describe_all", "variants"]
