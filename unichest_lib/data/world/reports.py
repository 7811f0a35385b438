"""Free-text reports for the sources that have them in reality (MIMIC-like, Open-I-like).

A report is written from what the radiologist *recorded* (:attr:`Population.state`): present
findings with a position where it makes sense, uncertain ones hedged ("cannot exclude ..."),
a few explicit negations ("no pneumothorax") and normal sentences. The generator returns the
ground-truth triplets (entity, position, exists) alongside the text, so the report filter can
be scored against it. Phrasing is drawn from small template lists so the filter has real
work to do. Uncertain mentions are not in the triplets' ``exists=True`` set: they are
returned with ``exists=False`` and position ``"uncertain"`` so a scorer can treat them apart.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import numpy as np

from ..samples import Triplet

#: Findings written with a lung position ("right lower lobe ...").
LOCALISED = {"atelectasis", "infiltration", "mass", "nodule", "pneumonia", "consolidation",
             "lung opacity", "lung lesion", "calcification", "tuberculosis", "fracture"}
#: Findings written with a side only ("left pleural effusion").
SIDED = {"pleural effusion", "pneumothorax", "pleural thickening", "pleural other",
         "elevated hemidiaphragm"}
#: Findings written as bilateral.
BILATERAL = {"edema", "interstitial lung disease", "fibrosis", "emphysema"}

_ZONES = {"upper": ("upper lobe", "upper zone", "apex"), "mid": ("mid lung", "mid zone", "perihilar region"),
          "lower": ("lower lobe", "lung base", "base")}
_POSITIVE = ("{Pos} {ent}.", "There is {ent} in the {pos}.", "{Ent} is seen in the {pos}.",
             "Findings are consistent with {ent} in the {pos}.", "{Pos} {ent} is noted.")
_POSITIVE_NOPOS = ("{Ent}.", "There is {ent}.", "{Ent} is present.", "Findings consistent with {ent}.")
_UNCERTAIN = ("Cannot exclude {ent}.", "Possible {ent}.", "{Ent} is not excluded.",
              "Questionable {ent}.", "Findings may represent {ent}.")
_NEGATIVE = ("No {ent}.", "There is no {ent}.", "No evidence of {ent}.", "Negative for {ent}.",
             "No definite {ent} is seen.")
_WORDING = {  # how reports name some classes (the filter must map them back)
    "pleural effusion": ("pleural effusion", "effusion"),
    "support devices": ("support devices",),
    "lung opacity": ("opacity", "airspace opacity"),
    "enlarged cardiomediastinum": ("widened mediastinum", "enlarged cardiomediastinum"),
    "interstitial lung disease": ("interstitial lung disease", "reticular opacities"),
    "cardiomegaly": ("cardiomegaly", "enlarged heart"),
    "hernia": ("hiatal hernia",),
}
_DEVICES = ("Endotracheal tube in standard position.", "Right internal jugular central line "
            "terminates in the SVC.", "Left chest wall pacemaker with lead in the right ventricle.")


def _zone(v: float) -> str:
    return "upper" if v < -0.15 else ("mid" if v < 0.25 else "lower")


def position(entity: str, side: float, v: float, rng: np.random.Generator) -> str:
    """The position phrase written for a finding (also its triplet position)."""
    s = "right" if side > 0 else "left"
    if entity in BILATERAL:
        return "bilateral"
    if entity in SIDED:
        return s
    if entity in LOCALISED:
        zone = _ZONES[_zone(v)]
        return f"{s} {zone[rng.integers(len(zone))]}"
    return ""


def _cap(t: str) -> str:
    return t[:1].upper() + t[1:]


def write_report(rng: np.random.Generator, findings: tuple[str, ...], state: np.ndarray,
                 side: np.ndarray, v: np.ndarray, device_kind: int):
    """(report, triplets) for one image from its recorded ``state`` (F,) over ``findings``."""
    sentences: list[str] = []
    triplets: list[Triplet] = []
    pos_idx = [j for j in range(len(findings)) if state[j] == 1]
    unc_idx = [j for j in range(len(findings)) if np.isnan(state[j])]
    neg_idx = [j for j in range(len(findings)) if state[j] == 0]
    for j in rng.permutation(pos_idx) if pos_idx else []:
        ent = findings[j]
        if ent == "support devices":
            kinds = [k for b, k in zip((1, 2, 4), _DEVICES) if device_kind & b]
            sentences.extend(kinds)
            triplets.append(Triplet(ent, "", True))
            continue
        word = _pick(rng, _WORDING.get(ent, (ent,)))
        pos = position(ent, side[j], v[j], rng)
        tmpl = _pick(rng, _POSITIVE if pos else _POSITIVE_NOPOS)
        sentences.append(tmpl.format(ent=word, Ent=_cap(word), pos=pos, Pos=_cap(pos)))
        triplets.append(Triplet(ent, pos, True))
    for j in unc_idx:
        word = _pick(rng, _WORDING.get(findings[j], (findings[j],)))
        tmpl = _pick(rng, _UNCERTAIN)
        sentences.append(tmpl.format(ent=word, Ent=_cap(word)))
        triplets.append(Triplet(findings[j], "uncertain", False))
    common = [j for j in neg_idx if findings[j] in ("pneumothorax", "pleural effusion", "consolidation",
                                                    "edema", "pneumonia", "cardiomegaly")]
    for j in rng.permutation(common)[: rng.integers(1, 4)] if common else []:
        word = _pick(rng, _WORDING.get(findings[j], (findings[j],)))
        sentences.append(_pick(rng, _NEGATIVE).format(ent=word, Ent=_cap(word)))
        triplets.append(Triplet(findings[j], "", False))
    if not pos_idx:
        sentences.append(_pick(rng, ("No acute cardiopulmonary process.", "No acute findings.")))
        triplets.append(Triplet("no finding", "", True))
    if not any(findings[j] in ("cardiomegaly", "enlarged cardiomediastinum") for j in pos_idx + unc_idx):
        if rng.random() < 0.6:
            sentences.insert(0, _pick(rng, ("The cardiomediastinal silhouette is within normal limits.",
                                            "Heart size is normal.", "Normal heart size.")))
    head = _pick(rng, ("FINDINGS: ", "", "IMPRESSION: "))
    return head + " ".join(sentences), triplets


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]
