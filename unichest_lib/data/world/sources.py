"""The nine embedded sources and their four heterogeneity dials.

Each source differs from the others in five separately documented ways, four of them with
their own dial in ``[0, 1]``; the single ``cfg.heterogeneity`` sets all of them
(:func:`dials`), and ``cfg.dials`` sets single dials apart (e.g. ``label_meaning=0``):

* **acquisition** — the imaging chain: intensity curve (gamma), contrast, exposure, quantum
  noise, blur, resolution loss, collimation border, burned-in marker, inverted polarity, grid
  lines, block-compression artefacts, positioning (:class:`Acquisition`).
* **label space** — which classes a source annotates (:data:`labels.EMBEDDED_LABEL_SPACES`).
  This is *not* scaled: a source that never labelled a class cannot label it at heterogeneity
  0 either. Heterogeneity 0 therefore means identically distributed *images and true findings*
  with label spaces that still differ, which is exactly the paper's missing-label setting.
* **label prior and noise** — class prevalences (:mod:`.priors`) and how labels were made:
  report-mined false negatives and "uncertain" mentions (CheXpert, MIMIC), NLP-mined labels
  (ChestX-ray14), radiologist labels (VinDr) (:class:`LabelNoise`).
* **appearance** — the same finding looks systematically different per source: size,
  density, preferred side, vertical position, texture (:class:`Appearance`).
* **label meaning** — the same image gets a different label depending on who labelled it:
  labels mined from reports miss the findings a radiologist did not think worth mentioning,
  which are the small and faint ones, while image-level annotation by radiologists (VinDr-CXR)
  misses them no more than any other (:class:`LabelMeaning`; Jain et al. 2021, VisualCheXbert,
  measured how report labels and image labels disagree; Oakden-Rayner 2020 on ChestX-ray14).
  The dial moves a source's false negatives from random findings (0) onto its least visible
  ones (1): the miss *rate* stays that of the label-noise dial, but *which* findings go
  unlabelled follows the image. A threshold on one visibility axis cannot by itself give a
  per-source head an edge in AUC (every source's labels are then monotone in the same
  visibility, so one score ranks them all), so the dial also moves **class definitions**:
  report labellers use broad ones (:data:`BROAD_DEFINITIONS`: CheXpert's "lung opacity"
  covers consolidation, edema, ...; ChestX-ray14's "infiltration" covers airspace disease)
  where VinDr-CXR's radiologists keep each finding apart. Then the same image ranks
  differently per source, which a head that does not know the source cannot fit.

At dial value ``h`` every source parameter is ``neutral + h * (source - neutral)``, so at 0
all sources share the neutral acquisition, appearance, pooled prior and no label noise.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ... import config as C


@dataclass(frozen=True)
class Acquisition:
    """The imaging chain of a source. Probabilities are per image."""

    gamma: float = 1.0  # intensity curve exponent applied to the 0..1 image
    contrast: float = 1.0  # multiplies deviations from mid-grey
    exposure: float = 0.0  # additive brightness offset
    noise: float = 0.03  # std of quantum-like (signal-dependent) noise
    blur: float = 0.6  # Gaussian blur sigma in pixels at 128 px
    downsample: int = 1  # resolution loss factor (1 = none)
    border: float = 0.0  # collimation border width as a fraction of the image side
    p_marker: float = 0.0  # probability of a burned-in laterality marker
    p_invert: float = 0.0  # probability of inverted polarity (MONOCHROME1 read as 2)
    grid: float = 0.0  # amplitude of anti-scatter grid lines
    blocking: float = 0.0  # strength of 8x8 block-compression artefacts
    scale: float = 1.0  # patient size in the field of view (AP portable: smaller)
    rotation: float = 0.0  # extra std of patient rotation in degrees


@dataclass(frozen=True)
class Appearance:
    """How a source's findings look, relative to the neutral world."""

    size: float = 1.0  # multiplies lesion radii and extents
    density: float = 1.0  # multiplies opacity strength
    p_right: float = 0.5  # probability that a one-sided finding is on the patient's right
    y_shift: float = 0.0  # vertical shift of focal findings (fraction of lung height, + = down)
    texture: float = 0.5  # 0 smooth .. 1 mottled opacities


@dataclass(frozen=True)
class LabelNoise:
    """How a source's labels were made from the true findings."""

    false_negative: float = 0.0  # a present finding goes unlabelled (0)
    false_positive: float = 0.0  # an absent finding is labelled present
    uncertain: float = 0.0  # multiplies the real CheXpert uncertain rates -> NaN (U-Ignore)


@dataclass(frozen=True)
class LabelMeaning:
    """What a source's label means for a given image."""

    subtle: float = 0.0  # share of the false negatives that are the least visible findings
    broad: float = 0.0  # share of images labelled with the labeller's broad class definitions


@dataclass(frozen=True)
class SourceSpec:
    """One embedded source at full heterogeneity."""

    name: str
    modelled_on: str
    pretrain: bool
    has_reports: bool
    acquisition: Acquisition = field(default_factory=Acquisition)
    appearance: Appearance = field(default_factory=Appearance)
    noise: LabelNoise = field(default_factory=LabelNoise)
    meaning: LabelMeaning = field(default_factory=LabelMeaning)
    images_per_patient: float = 2.0  # mean frontal images per patient (follow-ups)
    with_masks: bool = False  # the source is used for grounding (boxes/masks)


NEUTRAL_ACQ, NEUTRAL_APP, NEUTRAL_NOISE = Acquisition(), Appearance(), LabelNoise()
NEUTRAL_MEANING = LabelMeaning()
#: Labels mined from reports by NLP (MIMIC-CXR, CheXpert: the CheXpert labeller; ChestX-ray14:
#: NIH's labeller) miss what the report does not mention; PadChest: 73 % of its labels are
#: NLP-mined, 27 % by physicians (Bustos et al. 2020). VinDr-CXR (three radiologists per
#: image) and Open-I (MeSH codes assigned by hand) keep the neutral, random misses.
REPORT_MINED = LabelMeaning(subtle=1.0, broad=1.0)

#: Broad class definitions of a source's labeller: {class: the findings it also covers}. The
#: CheXpert labeller (CheXpert, MIMIC-CXR) files its observations in a hierarchy in which
#: "lung opacity" is the parent of edema, consolidation, pneumonia, lung lesion and atelectasis
#: (Irvin et al. 2019); VinDr-CXR's radiologists box "lung opacity", "consolidation" and
#: "infiltration" as separate local findings (Nguyen et al. 2022). ChestX-ray14's "infiltration"
#: is mined from reports, where "infiltrate" is used loosely for airspace disease of any cause;
#: the Fleischner glossary advises against the term for that reason (Hansell et al. 2008). So
#: the same consolidation is "lung opacity" to CheXpert, "infiltration" to ChestX-ray14 and
#: neither to VinDr. A source's true findings are drawn so that the share of its images showing
#: something its labeller calls "lung opacity" is the real rate (:func:`.population.
#: narrow_prior`); the label-meaning dial then only changes how the same images are labelled.
BROAD_DEFINITIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "mimic": {"lung opacity": ("atelectasis", "consolidation", "edema", "pneumonia",
                               "lung lesion")},
    "chexpert": {"lung opacity": ("atelectasis", "consolidation", "edema", "pneumonia",
                                  "lung lesion")},
    "chestxray14": {"infiltration": ("consolidation", "edema", "pneumonia")},
}

#: The sources at full heterogeneity. Acquisition, appearance and noise numbers are invented
#: to mimic each dataset's reputation (e.g. MIMIC/CheXpert: many portable AP films, report-
#: mined labels; ChestX-ray14: 8-bit, compressed, downsampled; VinDr: clean, sharp, radiologist
#: labels; PadChest: some inverted films); the data cards list them. ``images_per_patient`` is
#: frontal images per patient from the shipped metadata (``priors.derive_real``, rounded; a test
#: checks them) where it has patient ids (ChestX-ray14, CheXpert, PadChest); 1 where a dataset
#: publishes none (VinDr-CXR, SIIM, Shenzhen, ChestX-Det10; Open-I: one report = one study);
#: MIMIC-CXR's 3.0 is invented (its metadata is not shipped).
SPECS: dict[str, SourceSpec] = {s.name: s for s in (
    SourceSpec("mimic", "MIMIC-CXR", True, True,
               Acquisition(gamma=1.25, contrast=0.85, exposure=0.04, noise=0.05, blur=0.9,
                           border=0.05, p_marker=0.7, scale=0.9, rotation=4.0),
               Appearance(size=1.25, density=1.1, p_right=0.6, y_shift=0.08, texture=0.3),
               LabelNoise(false_negative=0.12, uncertain=1.0), REPORT_MINED, images_per_patient=3.0),
    SourceSpec("chestxray14", "NIH ChestX-ray14", True, False,
               Acquisition(gamma=0.8, contrast=1.15, exposure=-0.03, noise=0.02, blur=1.3,
                           downsample=2, blocking=0.5, p_marker=0.3),
               Appearance(size=0.85, density=0.9, p_right=0.4, y_shift=-0.05, texture=0.8),
               LabelNoise(false_negative=0.15, false_positive=0.01), REPORT_MINED,
               images_per_patient=3.64),
    SourceSpec("chexpert", "CheXpert", True, False,
               Acquisition(gamma=1.1, contrast=0.95, exposure=0.06, noise=0.045, blur=0.8,
                           border=0.08, grid=0.04, scale=0.92, rotation=3.0),
               Appearance(size=1.15, density=1.2, p_right=0.55, y_shift=0.05, texture=0.4),
               LabelNoise(false_negative=0.10, uncertain=1.0), REPORT_MINED, images_per_patient=2.96),
    SourceSpec("vindr", "VinDr-CXR", True, False,
               Acquisition(gamma=0.95, contrast=1.3, exposure=-0.05, noise=0.015, blur=0.3,
                           scale=1.05),
               Appearance(size=0.75, density=0.8, p_right=0.5, y_shift=-0.1, texture=0.6),
               LabelNoise(false_negative=0.03), images_per_patient=1.0),
    SourceSpec("shenzhen", "Shenzhen TB (Jaeger et al. 2014)", False, False,
               Acquisition(gamma=0.9, contrast=1.1, noise=0.025, blur=0.7, border=0.03),
               images_per_patient=1.0),
    SourceSpec("openi", "Open-I (Indiana University)", False, True,
               Acquisition(gamma=1.05, contrast=1.05, noise=0.03, blur=1.0, downsample=2,
                           p_marker=0.5),
               Appearance(size=0.9), LabelNoise(false_negative=0.03), images_per_patient=1.0),
    SourceSpec("siim", "SIIM-ACR Pneumothorax", False, False,
               Acquisition(gamma=1.0, contrast=1.0, noise=0.035, blur=0.7, grid=0.03),
               Appearance(size=1.1), images_per_patient=1.0),
    SourceSpec("padchest", "PadChest", False, False,
               Acquisition(gamma=1.15, contrast=0.9, noise=0.03, blur=0.8, p_invert=0.3,
                           border=0.04),
               Appearance(size=1.0, p_right=0.45), LabelNoise(false_negative=0.05),
               LabelMeaning(subtle=0.73),
               images_per_patient=1.51),
    SourceSpec("chestxdet10", "ChestX-Det10", False, False,
               Acquisition(gamma=0.8, contrast=1.15, exposure=-0.03, noise=0.02, blur=1.3,
                           downsample=2, blocking=0.5),
               Appearance(size=0.85, density=0.9), images_per_patient=1.0, with_masks=True),
)}
assert tuple(SPECS) == C.ALL_SOURCES or set(SPECS) == set(C.ALL_SOURCES)


@dataclass(frozen=True)
class Dials:
    """The heterogeneity dials, each in [0, 1]. ``label_space`` is recorded for completeness
    but only 1 is supported (see the module docstring)."""

    acquisition: float = 1.0
    label_space: float = 1.0
    label_prior: float = 1.0
    appearance: float = 1.0
    label_meaning: float = 1.0


assert set(C.DIALS) == {f.name for f in dataclasses.fields(Dials)} - {"label_space"}


def dials(heterogeneity: float, single: dict[str, float] | None = None) -> Dials:
    """Every dial set from the single ``cfg.heterogeneity`` knob, then the ``single`` ones
    (``config.dial_values(cfg.dials)``, e.g. ``{"label_meaning": 0.0}``) set apart."""
    if not 0.0 <= heterogeneity <= 1.0:
        raise ValueError(f"heterogeneity = {heterogeneity!r} must lie in [0, 1]")
    h = float(heterogeneity)
    d = Dials(acquisition=h, label_space=1.0, label_prior=h, appearance=h, label_meaning=h)
    single = dict(single or {})
    bad = {k: v for k, v in single.items() if k not in C.DIALS or not 0.0 <= v <= 1.0}
    if bad:
        raise ValueError(f"dials {bad}: names must be in {C.DIALS}, values in [0, 1]")
    return dataclasses.replace(d, **{k: float(v) for k, v in single.items()})


def _blend(neutral, full, h: float):
    out = {}
    for f in dataclasses.fields(neutral):
        a, b = getattr(neutral, f.name), getattr(full, f.name)
        v = a + h * (b - a)
        out[f.name] = int(round(v)) if isinstance(a, int) and not isinstance(a, bool) else v
    return type(neutral)(**out)


def effective(source: str, d: Dials) -> SourceSpec:
    """The source's spec with acquisition, appearance, label noise and label meaning scaled by
    the dials."""
    if source not in SPECS:
        raise KeyError(f"unknown embedded source {source!r}; known: {', '.join(SPECS)}")
    s = SPECS[source]
    return dataclasses.replace(
        s,
        acquisition=_blend(NEUTRAL_ACQ, s.acquisition, d.acquisition),
        appearance=_blend(NEUTRAL_APP, s.appearance, d.appearance),
        noise=_blend(NEUTRAL_NOISE, s.noise, d.label_prior),
        meaning=_blend(NEUTRAL_MEANING, s.meaning, d.label_meaning),
        images_per_patient=s.images_per_patient,
    )


def default_size(source: str, cfg) -> int:
    """Images of ``source`` in the world: ``cfg.n_per_source`` for pre-training sources,
    ``cfg.n_downstream`` for downstream ones, plus ``cfg.n_valid`` and ``cfg.n_test`` (the
    evaluation splits sized on their own; 0 = a fraction of the images above)."""
    base = cfg.n_per_source if SPECS[source].pretrain else cfg.n_downstream
    return base + cfg.n_valid + cfg.n_test
