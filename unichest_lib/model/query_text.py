"""What the class queries of Eq. 2 say, ``cfg.query_text``: the words a query network reads.

* ``"name"`` (the paper): each class is queried by its name, the same vector every step.
* ``"description"`` (MedKLIP, Section 3.2: entities replaced by descriptions of what they
  look like): each class is queried by its visual description
  (:data:`unichest_lib.data.descriptions.DESCRIPTIONS`), in training and in evaluation.
* ``"ensemble"``: each class has several phrasings (:func:`~unichest_lib.data.descriptions.
  variants`: the name, the description and a few sentences around them). At every optimiser
  step each class's query is one phrasing drawn at random (:func:`draw`, seeded by the run's
  seed, stage and step, so a resumed run draws the same); at test time a class is queried by
  the **mean of its phrasings' embeddings**. One forward pass, as for a name; and because
  Φ_text ends in a linear projection, the mean of the projected embeddings is the projection
  of the mean sentence feature, a point between the phrasings the networks were trained on.

A query *entry* is one text, or a tuple of texts whose embeddings are averaged;
:func:`query_groups` lays entries out as groups of texts, one text per class, that the text
encoder embeds batch by batch (group v holds every class's v-th phrasing).

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import zlib
from typing import Sequence, Union

import numpy as np

from ..config import QUERY_TEXTS
from ..data import descriptions

#: A query: one text, or a tuple of texts whose embeddings are averaged.
Entry = Union[str, tuple]


def check_query_text(query_text: str) -> str:
    """``query_text`` if it is one of :data:`~unichest_lib.config.QUERY_TEXTS`, else a
    ValueError naming the valid values."""
    if query_text not in QUERY_TEXTS:
        raise ValueError(f"query_text {query_text!r} is not valid; choose one of {QUERY_TEXTS}")
    return query_text


def entries(classes: Sequence[str], query_text: str) -> list[Entry]:
    """The query entry of each class under ``query_text``: its name, its description, or the
    tuple of its phrasings (``"ensemble"``)."""
    check_query_text(query_text)
    if query_text == "name":
        return list(classes)
    if query_text == "description":
        return descriptions.describe_all(classes)
    return [descriptions.variants(c) for c in classes]


def query_groups(items: Sequence[Entry]) -> list[list[str]]:
    """Entries as V groups of texts, one text per entry each: a tuple of V texts gives its
    v-th text to group v, a single text is repeated in every group. Tuples of different
    lengths (other than one) are a ValueError."""
    if isinstance(items, str) or not items:
        raise ValueError(f"query entries must be a non-empty sequence, got {items!r}")
    lengths = {len(e) for e in items if not isinstance(e, str)}
    if len(lengths) > 1 or 0 in lengths:
        raise ValueError(f"query entries hold tuples of different lengths {sorted(lengths)}; "
                         "every class needs the same number of phrasings")
    n = lengths.pop() if lengths else 1
    return [[e if isinstance(e, str) else e[v] for e in items] for v in range(n)]


def draw(n_classes: int, n_variants: int, *, seed: int, stage: str, step: int) -> np.ndarray:
    """(n_classes,) phrasing index of every class at optimiser ``step`` of ``stage``: uniform
    over ``range(n_variants)``, independent across classes, a function of (seed, stage, step)
    only, so it touches no global random state."""
    if n_classes < 1 or n_variants < 1 or step < 0:
        raise ValueError(f"draw needs n_classes, n_variants >= 1 and step >= 0, got "
                         f"{n_classes}, {n_variants}, {step}")
    rng = np.random.default_rng([int(seed), zlib.crc32(stage.encode()), int(step)])
    return rng.integers(0, n_variants, size=n_classes)


__all__ = ["Entry", "check_query_text", "draw", "entries", "query_groups"]
