"""Where a report places each finding: the position set of MedKLIP (Wu et al. 2023).

MedKLIP's report filter turns a report into (entity, position, exists) triplets (Sec. 3.2,
Eq. 3) and supervises, for each existing entity with a position, *where* it is, by contrast
with other positions of a fixed set (Sec. 3.3, Eq. 7; 51 positions in its Appendix A). Here
the triplets come from :func:`unichest_lib.data.report_filter.extract`, whose location
phrases ("right lower lobe", "left base", "bibasilar") are reduced to a canonical *side* and
*zone* (:func:`canonical_position`), giving a fixed vocabulary of 47 positions
(:data:`POSITIONS`).

Each sample of a :class:`~unichest_lib.data.samples.MultiSourceDataset` carries
``positions`` (c,) int64: per class, the index in :data:`POSITIONS` of where its text places
the finding as existing, -1 where unknown (not mentioned, negated, no location, or a
label-only text, which has no location words). Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from .report_filter import extract

#: The canonical sides and zones a location phrase is reduced to ("" = not said).
SIDES = ("", "right", "left", "bilateral")
ZONES = ("", "upper", "middle", "lower", "apical", "basal", "perihilar", "retrocardiac",
         "lateral", "medial", "peripheral", "central")
#: The fixed position vocabulary: every "side zone" pair but the empty one (47 entries).
POSITIONS: tuple[str, ...] = tuple(f"{s} {z}".strip() for s in SIDES for z in ZONES if s or z)
#: The value of ``positions`` where a class has no known position.
UNKNOWN = -1

_SIDE_WORDS = {"right": ("right", ""), "left": ("left", ""), "bilateral": ("bilateral", ""),
               "bilaterally": ("bilateral", ""), "both": ("bilateral", ""),
               "biapical": ("bilateral", "apical"), "bibasilar": ("bilateral", "basal"),
               "bibasal": ("bilateral", "basal")}
_ZONE_WORDS = {"upper": "upper", "middle": "middle", "mid": "middle", "lower": "lower",
               "basilar": "basal", "basal": "basal", "apical": "apical", "hilar": "perihilar",
               **{z: z for z in ZONES[6:]}}
_PART_ZONES = {"base": "basal", "bases": "basal", "costophrenic": "basal", "apex": "apical",
               "apices": "apical", "hilum": "perihilar"}


def canonical_position(phrase: str) -> str:
    """The entry of :data:`POSITIONS` a location phrase stands for ("right lower lobe" ->
    "right lower", "left base" -> "left basal", "bibasilar" -> "bilateral basal"); "" when
    the phrase has no side or zone word (or is empty)."""
    side = zone = ""
    for w in phrase.lower().split():
        if w in _SIDE_WORDS:
            side, implied = _SIDE_WORDS[w]
            zone = zone or implied
        elif w in _ZONE_WORDS:
            zone = _ZONE_WORDS[w]
        elif w in _PART_ZONES and not zone:
            zone = _PART_ZONES[w]
    return f"{side} {zone}".strip()


def position_text(position: str) -> str:
    """The sentence whose embedding stands for a position (MedKLIP's Eq. 5 prompt)."""
    return f"it is located at {position}"


@lru_cache(maxsize=65536)
def _row(text: str, classes: tuple[str, ...]) -> tuple[int, ...]:
    col = {c: j for j, c in enumerate(classes)}
    row = [UNKNOWN] * len(classes)
    for t in extract(text):
        pos = canonical_position(t.position) if t.exists else ""
        j = col.get(t.entity)
        if pos and j is not None and row[j] == UNKNOWN:  # the first located mention wins
            row[j] = POSITIONS.index(pos)
    return tuple(row)


def position_index(text: str, classes: Sequence[str]) -> list[int]:
    """Per class of ``classes``, the index in :data:`POSITIONS` of where ``text`` (a report or
    its filtered entities) places that finding as existing; :data:`UNKNOWN` (-1) where it is
    not mentioned, negated, or has no location. Cached per (text, classes)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return list(_row(text, tuple(classes)))


__all__ = ["POSITIONS", "SIDES", "UNKNOWN", "ZONES", "canonical_position", "position_index",
           "position_text"]
