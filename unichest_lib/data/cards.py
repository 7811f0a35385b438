"""Data cards: one Markdown file per dataset with a YAML front matter block.

``data_cards/<name>.md`` describes a real dataset of the paper's Table III (provenance,
licence, access, size, label space, statistics, biases and pitfalls);
``data_cards/embedded_<name>.md`` describes a source of the embedded world (and how it is
generated). :func:`load_cards` reads them all into one table, so a notebook can show every
source side by side, and :func:`stats` recomputes a real dataset's statistics from the metadata
that ``torchxrayvision`` ships — the numbers quoted in the cards come from::

    python -m unichest_lib.data.cards stats chestxray14
    python -m unichest_lib.data.cards stats vindr --set min_readers=2 --prevalences

(``--prevalences`` prints the sorted "class p %" list the cards' Statistics paragraphs quote;
``tests/test_priors_real.py`` recomputes every number they state from the shipped files).

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

#: The cards folder of a source checkout (next to the package).
CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"
REQUIRED_FIELDS = ("name", "title", "kind", "access", "licence", "label_space")


class CardError(ValueError):
    """A data card is malformed; the message names the file and what is wrong."""


def read_card(path: str | Path) -> tuple[dict, str]:
    """(front matter, Markdown body) of one card; the front matter is YAML between ``---``."""
    import yaml

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise CardError(f"{path}: a data card must start with a '---' line (YAML front matter)")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise CardError(f"{path}: the front matter has no closing '---' line") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as e:
        raise CardError(f"{path}: cannot parse the front matter: {e}") from None
    if not isinstance(meta, dict):
        raise CardError(f"{path}: the front matter must be a mapping of field: value")
    missing = [f for f in REQUIRED_FIELDS if f not in meta]
    if missing:
        raise CardError(f"{path}: front matter lacks field(s) {missing}")
    expected = path.stem.removeprefix("embedded_")
    if meta["name"] != expected:
        raise CardError(f"{path}: name {meta['name']!r} must match the file name ({expected!r})")
    return meta, "\n".join(lines[end + 1:]).strip()


def load_cards(folder: str | Path | None = None) -> pd.DataFrame:
    """Every card of ``folder`` (default :data:`CARDS_DIR`) as one row: the front-matter
    fields, ``file`` and ``body``; index ``(kind, name)``."""
    folder = Path(folder) if folder is not None else CARDS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"data card folder {str(folder)!r} does not exist")
    rows = []
    for p in sorted(folder.glob("*.md")):
        if p.name.lower() == "readme.md":
            continue
        meta, body = read_card(p)
        rows.append({**meta, "file": p.name, "body": body})
    df = pd.DataFrame(rows)
    return df.set_index(["kind", "name"], drop=False).sort_index() if len(df) else df


def stats(name: str, opts: dict | None = None) -> pd.DataFrame:
    """Per-class statistics of real dataset ``name`` from its metadata: positives, negatives,
    missing and prevalence (among labelled images) for each canonical class, plus a first row
    ``(all)`` with the image and patient counts. ``opts`` are the dataset's YAML options
    (default: the metadata shipped with torchxrayvision, frontal views)."""
    from . import real

    opts = dict(opts or {})
    with tempfile.TemporaryDirectory() as empty:
        opts.setdefault("imgpath", empty)
        frame = real.load_frame(name, opts)
    classes = real.observed_classes(name)
    y = real.harmonise(frame, name, classes)
    pos = np.nansum(y == 1, 0)
    neg = np.nansum(y == 0, 0)
    miss = np.isnan(y).sum(0)
    out = pd.DataFrame({"class": classes, "positive": pos, "negative": neg, "missing": miss,
                        "prevalence": np.round(pos / np.maximum(pos + neg, 1), 4)})
    head = pd.DataFrame([{"class": "(all)", "positive": len(frame),
                          "negative": frame["patient"].nunique(), "missing": 0,
                          "prevalence": np.nan}])
    out = pd.concat([head, out], ignore_index=True)
    out.attrs["note"] = "(all): positive = images, negative = patients"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m unichest_lib.data.cards {list,stats NAME}``."""
    ap = argparse.ArgumentParser(prog="python -m unichest_lib.data.cards",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    sub.add_parser("list", help="one line per data card")
    st = sub.add_parser("stats", help="statistics of a real dataset from its shipped metadata")
    st.add_argument("name")
    st.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE",
                    help="the dataset's YAML options, e.g. min_readers=2 (vindr)")
    st.add_argument("--prevalences", action="store_true",
                    help="print the prevalences as a sorted 'class p %%' list (for the card)")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 160)
    if args.verb == "list":
        df = load_cards()
        print(df[["kind", "name", "title", "access"]].to_string(index=False) if len(df) else "no cards")
    else:
        import yaml

        opts = {}
        for kv in args.set:
            if "=" not in kv:
                ap.error(f"--set expects OPTION=VALUE, got {kv!r}")
            k, v = kv.split("=", 1)
            opts[k] = yaml.safe_load(v)
        df = stats(args.name, opts)
        print(prevalence_text(df) if args.prevalences else df.to_string(index=False))
        if not args.prevalences:
            print(df.attrs["note"])
    return 0


def prevalence_text(df: pd.DataFrame) -> str:
    """The classes of a :func:`stats` table with a prevalence, highest first, as the cards
    quote them: ``"cardiomegaly 9.2 %, infiltration 9.2 %, ..."``."""
    rows = df[(df["class"] != "(all)") & (df["positive"] > 0)]
    rows = rows.sort_values("prevalence", ascending=False, kind="stable")
    return ", ".join(f"{c} {100 * p:.1f} %" for c, p in zip(rows["class"], rows["prevalence"]))


if __name__ == "__main__":
    sys.exit(main())
