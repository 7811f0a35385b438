"""The text units of the sample contract: the ``[SEP]`` separator and report triplets.

They live apart from :mod:`.samples` so that the report filter (which builds triplets) and
the samples (whose ``positions`` field reads the filter, :mod:`.positions`) import them
without a cycle; :mod:`.samples` re-exports both.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from typing import NamedTuple

SEP = " [SEP] "


class Triplet(NamedTuple):
    """One finding mentioned in a report, as MedKLIP's report filter extracts it:
    ``entity`` is a canonical class of :mod:`unichest_lib.data.labels`, ``position`` a short
    location phrase ("right lower lobe", "" when none) and ``exists`` False when negated."""

    entity: str
    position: str
    exists: bool


__all__ = ["SEP", "Triplet"]
