"""The report filter: a free-text report -> (entity, position, exists) triplets.

The paper does not feed raw reports to Φ_text: it extracts the entities with RadGraph and joins
them with ``[SEP]``, sentence by sentence (Section III-B; MedKLIP's triplet filter is the same
idea). RadGraph is a trained model that cannot be fetched here, so the default filter is a
small, transparent rule system in the style of NegEx / ConText (Chapman et al. 2001; Harkema
et al. 2009), the rules that medspaCy's ``ConText`` component implements:

1. split the report into sentences (and clauses at ``;``);
2. find **target** phrases from a lexicon built from :data:`labels.ALL_CLASSES` and
   :data:`labels.SYNONYMS` (longest match wins) and map each to its canonical class;
3. find **modifier** triggers: *negation* ("no", "without", "... is not seen"), *uncertainty*
   ("possible", "cannot exclude", "... is not excluded"), *pseudo* triggers that look like
   negations but are not ("no change in"), and *terminators* ("but", "however") that end a
   trigger's scope. Forward triggers reach to the end of the clause, backward triggers to its
   start, and neither crosses a terminator;
4. read the **position** of each target from laterality/zone words next to it ("right lower
   lobe", "left base", "bilateral").

Uncertain mentions. MedKLIP and the CheXpert "U-Ones" policy treat a finding a report calls
possible as present for pre-training; we do the same by default (``uncertain="exists"``): a
report that says "cannot exclude pneumonia" yields ``("pneumonia", "", True)``. Pass
``uncertain="absent"`` or ``"drop"`` to :func:`extract` for the other policies.

medspaCy is the intended engine for these rules, but the pinned environment's spaCy stack
(thinc 8.2.4 built against NumPy 1.x) cannot be imported with NumPy 2, so the rules are
applied here with compiled regular expressions instead; they are fast (thousands of reports
per second) and need nothing but the standard library.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .labels import ALL_CLASSES, SYNONYMS
from .triplets import SEP, Triplet

#: Bumped whenever a rule changes, so cached filtered texts are recomputed.
VERSION = "rules-2"
UNCERTAIN_POLICIES = ("exists", "absent", "drop")

#: Lexicon entries that are too ambiguous as bare words ("line" in "pleural line", "normal"
#: in "normal heart size"); they are replaced by the longer phrases below.
_AMBIGUOUS = {"line", "normal", "device", "tube", "opacity", "lesion", "collapse", "infection",
              "tumor", "calcified"}
#: Extra target phrases (phrase -> canonical class) beyond ALL_CLASSES and SYNONYMS.
EXTRA_TARGETS: dict[str, str] = {
    "central line": "support devices", "central venous catheter": "support devices",
    "picc line": "support devices", "picc": "support devices",
    "endotracheal tube": "support devices", "et tube": "support devices",
    "nasogastric tube": "support devices", "ng tube": "support devices",
    "chest tube": "support devices", "feeding tube": "support devices",
    "monitoring device": "support devices", "sternal wires": "support devices",
    "opacity": "lung opacity", "opacities": "lung opacity", "opacification": "lung opacity",
    "lung lesion": "lung lesion", "pulmonary lesion": "lung lesion",
    "enlarged cardiac silhouette": "cardiomegaly", "heart size is enlarged": "cardiomegaly",
    "normal chest": "no finding", "no acute abnormality": "no finding",
    "no acute cardiopulmonary abnormality": "no finding", "unremarkable": "no finding",
    "no active disease": "no finding", "no acute disease": "no finding",
    "no acute cardiopulmonary disease": "no finding",
    "lobar collapse": "atelectasis", "pleural thickening": "pleural thickening",
    "blunting of the costophrenic angle": "pleural effusion",
    "elevation of the hemidiaphragm": "elevated hemidiaphragm",
    "elevated right hemidiaphragm": "elevated hemidiaphragm",
    "elevated left hemidiaphragm": "elevated hemidiaphragm",
    "emphysematous": "emphysema", "emphysematous changes": "emphysema",
    "cavitation": "tuberculosis", "cavitary": "tuberculosis",
    "mediastinal widening": "enlarged cardiomediastinum",
}
#: Phrases that state a finding is *absent* as a whole (target + negation in one phrase).
NEGATED_TARGETS: dict[str, str] = {
    "heart size is normal": "cardiomegaly", "normal heart size": "cardiomegaly",
    "heart is normal in size": "cardiomegaly", "normal cardiac silhouette": "cardiomegaly",
    "cardiac silhouette is normal": "cardiomegaly", "cardiac size is normal": "cardiomegaly",
    "heart size is within normal limits": "cardiomegaly",
    "normal mediastinal contours": "enlarged cardiomediastinum",
    "mediastinum is normal": "enlarged cardiomediastinum",
    "mediastinal contours are normal": "enlarged cardiomediastinum",
    "costophrenic angles are sharp": "pleural effusion",
}

NEG_FORWARD = ("no", "not", "without", "no evidence of", "no signs of", "no sign of",
               "negative for", "free of", "absence of", "resolution of", "resolved",
               "no definite", "no new", "no focal", "no acute", "there is no", "there are no",
               "no longer", "removal of", "clear of", "clearing of", "interval clearing of")
NEG_BACKWARD = ("is not seen", "are not seen", "not seen", "is absent", "are absent", "absent",
                "has resolved", "have resolved", "resolved", "is not present", "not present",
                "is not identified", "are not identified", "not identified", "not visualized",
                "has been removed", "have been removed", "is not evident", "not evident",
                "is no longer seen", "no longer seen", "is ruled out", "ruled out")
UNC_FORWARD = ("possible", "possibly", "probable", "probably", "questionable", "question of",
               "suspected", "suspicious for", "concerning for", "suggestive of", "may represent",
               "may be", "could be", "could represent", "cannot exclude", "can not exclude",
               "cannot rule out", "can not rule out", "cannot be excluded", "not excluded",
               "likely", "may reflect", "differential includes", "versus", "borderline",
               "equivocal", "worrisome for", "compatible with", "consistent with early")
UNC_BACKWARD = ("cannot be excluded", "can not be excluded", "is not excluded", "not excluded",
                "cannot be ruled out", "can not be ruled out", "is possible", "is suspected",
                "is questionable", "is likely", "are likely", "not ruled out",
                "is not entirely excluded", "is difficult to exclude")
PSEUDO = ("no change", "no significant change", "no interval change", "not only",
          "no increase", "no decrease", "without change", "no substantial change",
          "not significantly changed", "unchanged", "no other", "not changed")
TERMINATORS = ("but", "however", "although", "though", "otherwise", "which", "whereas",
               "apart from", "aside from", "except", "there is", "there are", "there has been",
               "with interval")

_SIDE = r"(?:right|left|bilateral|bilaterally|both|biapical|bibasilar|bibasal)"
_ZONE = (r"(?:upper|middle|mid|lower|basilar|basal|apical|perihilar|hilar|retrocardiac|"
         r"lateral|medial|peripheral|central)")
_PART = (r"(?:lobe|lobes|lung|lungs|zone|zones|base|bases|apex|apices|hemithorax|"
         r"costophrenic angle|lung field|field|hilum)")
_POSITION = re.compile(
    rf"\b(?:{_SIDE}(?:\s+{_ZONE})?(?:\s+{_PART})?|{_ZONE}\s+{_PART}|{_ZONE}(?=\s)|{_SIDE})\b")


def _alternation(phrases, plurals: bool = False) -> re.Pattern:
    ordered = sorted(set(phrases), key=lambda p: (-len(p), p))
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered)
    tail = "(?:e?s)?" if plurals else ""  # "granulomas", "effusions"
    return re.compile(rf"(?<![\w-])(?:{body}){tail}(?![\w-])")


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, tuple[str, bool]], re.Pattern]:
    """phrase -> (canonical class, negated-as-a-whole), and one regex matching them all."""
    lex: dict[str, tuple[str, bool]] = {}
    for c in ALL_CLASSES:
        lex[c] = (c, False)
    for c, syns in SYNONYMS.items():
        for s in syns:
            s = s.lower().replace("_", " ")
            if s not in _AMBIGUOUS and "/" not in s:
                lex.setdefault(s, (c, False))
    for s, c in EXTRA_TARGETS.items():
        lex[s] = (c, False)
    for s, c in NEGATED_TARGETS.items():
        lex[s] = (c, True)
    for s in _AMBIGUOUS & set(lex):
        if s not in ALL_CLASSES and s not in EXTRA_TARGETS:
            del lex[s]
    return lex, _alternation(lex, plurals=True)


@lru_cache(maxsize=1)
def _modifiers() -> tuple[re.Pattern, dict[str, str]]:
    """One regex for every trigger and a map trigger -> kind (neg_f, neg_b, unc_f, ...)."""
    kinds: dict[str, str] = {}
    for kind, phrases in (("term", TERMINATORS), ("neg_f", NEG_FORWARD), ("neg_b", NEG_BACKWARD),
                          ("unc_f", UNC_FORWARD), ("unc_b", UNC_BACKWARD), ("pseudo", PSEUDO)):
        for p in phrases:
            kinds[p] = kind  # later kinds win for phrases listed twice (e.g. pseudo)
    return _alternation(kinds), kinds


_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+|(?<=[a-z])\.(?=[A-Z])")
_CLEAN = re.compile(r"\s+")


def sentences(report: str) -> list[str]:
    """The report's sentences/clauses, lower-cased, whitespace normalised; ``[SEP]`` splits."""
    text = report.replace(SEP.strip(), "\n")
    parts = _SENTENCE.split(text)
    out = []
    for p in parts:
        p = _CLEAN.sub(" ", p).strip().strip(".;!?").strip().lower()
        if p:
            out.append(p)
    return out


def _position(sent: str, start: int, end: int, spans: list[tuple[int, int]]) -> str:
    """The location phrase closest to the target [start, end) in its own stretch of text
    (between the neighbouring targets), preferring one right before it."""
    lo = max([e for s, e in spans if e <= start], default=0)
    hi = min([s for s, e in spans if s >= end], default=len(sent))
    best, dist = "", None
    for m in _POSITION.finditer(sent, lo, hi):
        if m.start() < end and m.end() > start:
            continue
        d = start - m.end() if m.end() <= start else (m.start() - end) + 0.5
        if dist is None or d < dist:
            best, dist = m.group(0), d
    return _CLEAN.sub(" ", best)


def _phrase(text: str, lex) -> str:
    """The lexicon entry a match stands for (a plural ending stripped when needed)."""
    t = _CLEAN.sub(" ", text)
    for cut in (0, 1, 2):
        if t[:len(t) - cut] in lex:
            return t[:len(t) - cut]
    raise KeyError(t)


def _sentence_triplets(sent: str, uncertain: str) -> list[Triplet]:
    lex, target_re = _lexicon()
    trig_re, kinds = _modifiers()
    targets = [(m.start(), m.end(), _phrase(m.group(0), lex)) for m in target_re.finditer(sent)]
    if not targets:
        return []
    spans = [(s, e) for s, e, _ in targets]
    triggers = []
    for m in trig_re.finditer(sent):
        if any(m.start() < e and m.end() > s for s, e in spans):
            continue  # a trigger inside a target phrase is part of the target
        triggers.append((m.start(), m.end(), kinds[_CLEAN.sub(" ", m.group(0))]))
    out = []
    for s, e, phrase in targets:
        cls, whole_negated = lex[phrase]
        state = _modifier_state(s, e, triggers)
        if cls == "no finding":
            state = "exists"
        elif whole_negated:
            state = "negated"
        if state == "uncertain":
            if uncertain == "drop":
                continue
            state = "exists" if uncertain == "exists" else "negated"
        out.append(Triplet(cls, _position(sent, s, e, spans), state == "exists"))
    return out


def _modifier_state(s: int, e: int, triggers) -> str:
    """"negated", "uncertain" or "exists" for the target [s, e) given the clause's triggers.

    The nearest trigger in scope wins: a forward trigger before the target with no terminator
    or pseudo-trigger between them, or a backward trigger after it likewise.
    """
    state, best = "exists", None
    for ts, te, kind in triggers:
        if kind in ("neg_f", "unc_f") and te <= s:
            if any(k in ("term", "pseudo") and te <= a < s for a, _, k in triggers):
                continue
            d = s - te
        elif kind in ("neg_b", "unc_b") and ts >= e:
            if any(k == "term" and e <= a < ts for a, _, k in triggers):
                continue
            d = ts - e
        else:
            continue
        if best is None or d < best:
            best, state = d, ("negated" if kind.startswith("neg") else "uncertain")
    return state


def extract(report: str, *, uncertain: str = "exists") -> list[Triplet]:
    """(entity, position, exists) triplets of ``report``, in reading order.

    ``entity`` is a canonical class of :mod:`unichest_lib.data.labels`; ``position`` the nearest
    laterality/zone phrase ("" when none); ``exists`` False for negated mentions. Uncertain
    mentions follow ``uncertain`` ("exists", the default, as MedKLIP; "absent"; or "drop").
    """
    if not isinstance(report, str):
        raise TypeError(f"report must be a str, got {type(report).__name__}")
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain = {uncertain!r} is not valid; choose one of "
                         f"{UNCERTAIN_POLICIES}")
    return [t for sent in sentences(report) for t in _sentence_triplets(sent, uncertain)]


def report_to_text(report: str, *, uncertain: str = "exists") -> str:
    """The paper's text input ``t`` for a report: the existing findings with their position
    ("right pleural effusion"), sentence by sentence, joined by ``[SEP]``; ``"no finding"``
    when the report states no existing finding (as :func:`samples.labels_to_text`)."""
    parts: list[str] = []
    for t in extract(report, uncertain=uncertain):
        if t.exists:
            phrase = f"{t.position} {t.entity}".strip()
            if phrase not in parts:
                parts.append(phrase)
    if len(parts) > 1 and "no finding" in parts:
        parts.remove("no finding")  # "no acute process" next to a real finding
    return SEP.join(parts) if parts else "no finding"


def score(predicted: list[list[Triplet]], truth: list[list[Triplet]]) -> dict[str, float]:
    """Micro precision, recall and F1 of (entity, exists) pairs over a corpus of reports
    (positions are ignored; each pair counts once per report)."""
    if len(predicted) != len(truth):
        raise ValueError(f"predicted has {len(predicted)} reports, truth has {len(truth)}")
    tp = fp = fn = 0
    for p, t in zip(predicted, truth):
        ps = {(x.entity, bool(x.exists)) for x in p}
        ts = {(x.entity, bool(x.exists)) for x in t}
        tp += len(ps & ts)
        fp += len(ps - ts)
        fn += len(ts - ps)
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


__all__ = ["EXTRA_TARGETS", "NEGATED_TARGETS", "UNCERTAIN_POLICIES", "VERSION", "extract",
           "report_to_text", "score", "sentences"]
