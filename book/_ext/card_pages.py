"""Sphinx extension: the data cards as real sections of ``data_cards.md``.

The page holds one marker per kind of card, ``<!-- data-cards: real -->`` and
``<!-- data-cards: embedded -->``. When Sphinx reads the page, each marker is replaced by
:func:`unichest_lib.book.tables.cards_markdown` of the files in ``data_cards/``, so every card
gets a heading of its own (in the page's contents list) and the page cannot drift from the
files. Sphinx is told that the page depends on each card, so editing a card rebuilds it.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = re.compile(r"<!--\s*data-cards:\s*(\w+)\s*-->")
PAGE = "data_cards"


def _expand(app, docname: str, source: list[str]) -> None:
    if docname != PAGE or not MARKER.search(source[0]):
        return
    from unichest_lib.book import tables
    from unichest_lib.data import cards

    table = cards.load_cards()
    for path in sorted(Path(cards.CARDS_DIR).glob("*.md")):
        app.env.note_dependency(str(path.resolve()))
    source[0] = MARKER.sub(lambda m: tables.cards_markdown(table, m.group(1)), source[0])


def setup(app):
    app.connect("source-read", _expand)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
