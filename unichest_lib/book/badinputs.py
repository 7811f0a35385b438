"""The bad-input table of the book's appendix, rendered from what the tests recorded.

``tests/test_bad_inputs.py`` feeds the library each bad input (a mistyped parameter, a
corrupt image, a tampered checkpoint, ...) and records what the user sees: the exception
type and message, a logged warning, or the documented handling. The records live in
``book/bad_inputs.json``; this module renders them as ``book/appendix_bad_inputs.md``::

    UNICHEST_UPDATE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py   # re-record both files
    python -m unichest_lib.book.badinputs --check                  # page matches the JSON?

A test fails when either file is out of date with the library's current behaviour.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ..fileio import atomic_write

ROOT = Path(__file__).resolve().parents[2]
JSON_PATH = ROOT / "book" / "bad_inputs.json"
PAGE_PATH = ROOT / "book" / "appendix_bad_inputs.md"
FIELDS = ("area", "case", "input", "where", "outcome", "message", "test")

_INTRO = """\
# Appendix: bad inputs and what you see

Every row below is a bad input that `tests/test_bad_inputs.py` feeds the library on each
test run, with what the user sees: the exception and its message, a logged warning, or how
the input is handled. The page is **generated** from the recorded cases
(`book/bad_inputs.json`, rendered by `python -m unichest_lib.book.badinputs`); a test fails when
it no longer matches the library, so the messages shown are the ones you get. Temporary
folders appear as `<tmp>`, checksums as `<sha>`, file sizes as `<n>`, and the long list of valid names after a misspelt parameter as `<every Config field>`.

Rows whose *test* column names another file are covered there (they train a model or
kill a process and are too slow to repeat here); the message shown is still recorded here
from the same library function.

**Rules the table checks.** Parameters are validated before any work (one message naming
the parameter, the value and the valid range, identical from `config.resolve`, the command
line and `notebook.setup`); data problems are a clear error or a logged, configurable skip,
never a silently wrong number; files are read without executing code and verified by
checksum; no test-split sample is used to select a checkpoint.
"""


def _cell(text: str) -> str:
    """One list-table cell: several lines become a line block, nothing is lost; ``<``, ``>``
    and ``&`` are escaped so placeholders such as ``<tmp>`` show instead of vanishing as
    HTML tags."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()] or ["—"]
    return "\n\n    ".join(lines)


def render(records: Sequence[Mapping[str, str]]) -> str:
    """The Markdown page (MyST list-tables, one per area) of the recorded ``records``."""
    parts = [_INTRO]
    areas = list(dict.fromkeys(r["area"] for r in records))
    for area in areas:
        parts.append(f"\n## {area}\n\n```{{list-table}}\n:header-rows: 1\n:widths: 22 22 56\n"
                     ":class: bad-inputs\n\n* - bad input\n  - where\n  - what you see\n")
        for r in (r for r in records if r["area"] == area):
            seen = f"`{r['outcome']}`: {r['message']}"
            where = r["where"] + (f" ({r['test']})" if r.get("test") else "")
            parts.append(f"* - {_cell(r['case'] + ': ' + r['input'])}\n  - {_cell(where)}\n"
                         f"  - {_cell(seen)}\n")
        parts.append("```\n")
    return "".join(parts)


def load(path: str | Path = JSON_PATH) -> list[dict]:
    """The recorded cases at ``path`` (a JSON list of records with :data:`FIELDS`)."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(records, list) or any(set(r) != set(FIELDS) for r in records):
        raise ValueError(f"{path}: expected a JSON list of records with fields {FIELDS}")
    return records


def write(records: Sequence[Mapping[str, str]], json_path: str | Path = JSON_PATH,
          page_path: str | Path = PAGE_PATH) -> None:
    """Write the records and their rendered page, each atomically."""
    atomic_write(json_path, json.dumps(list(records), indent=1, ensure_ascii=False) + "\n")
    atomic_write(page_path, render(records))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unichest_lib.book.badinputs [--check]``: re-render the page from the JSON."""
    p = argparse.ArgumentParser(prog="python -m unichest_lib.book.badinputs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that the page is current")
    args = p.parse_args(argv)
    page = render(load())
    if args.check:
        current = PAGE_PATH.is_file() and PAGE_PATH.read_text(encoding="utf-8") == page
        print(f"{PAGE_PATH} is {'current' if current else 'OUT OF DATE'}")
        return 0 if current else 1
    atomic_write(PAGE_PATH, page)
    print(f"wrote {PAGE_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FIELDS", "JSON_PATH", "PAGE_PATH", "load", "main", "render", "write"]
