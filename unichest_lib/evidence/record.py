"""Recorded results: a study's measured tables, versioned in ``results/<profile>/<study>/``
with where they came from, so that every build of the book can show them.

A recorded study is a folder of compressed CSV tables (``<name>.csv.gz``) and a
``provenance.json`` written last: the library commit, the CPU and its flags, the precision
the runs trained in, torch and Python versions, the date, the wall time, the command that
re-measures it, each table's sha256 and the **code version** of the code its numbers depend
on (:func:`code_version`). Reading a study back (:func:`read`) says what it is:

* ``fresh``: recorded by the code the library has now;
* ``stale``: the training, model or data code changed since, or the profile's configuration
  (:func:`config_version`: every field that can change a number, less the ones the study
  varies itself) is no longer the one it measured (the book shows the numbers as a record of
  the past and draws no verdict from them);
* ``missing``: never recorded at this profile;
* ``damaged``: a file is unreadable or does not match its checksum (a one-line message; the
  book still builds).

Introduced in ``notebooks/02_conquer.ipynb`` (the schedule study).
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import io
import json
import pathlib

import pandas as pd

from ..fileio import atomic_write, atomic_write_json, digest, sha256_bytes

#: Where the recorded results live: ``results/`` at the repository root.
ROOT = pathlib.Path(__file__).resolve().parents[2] / "results"
#: The code a recorded number depends on: the world and data, the model, how it trains and
#: how it is scored. A change here (other than comments, docstrings and formatting) makes
#: every study recorded before it stale. Bookkeeping that cannot change a number (the
#: artifact store, its keys, the checkpoint files) is left out, so that renaming it does not
#: throw the record away; the configuration counts through :func:`config_version` (a new
#: default of one profile does not make another profile's record stale).
CODE = ("data", "model", "training/augment.py", "training/features.py",
        "training/losses.py", "training/optim.py", "training/rng.py", "training/stages.py",
        "training/trainer.py", "evaluation/classification.py", "evaluation/metrics.py")
_LIB = pathlib.Path(__file__).resolve().parents[1]
#: Configuration fields that cannot change what a study measures: where files go, how many
#: workers load them, the device and the precision switch (the precision a record trained in
#: is in its provenance and caption).
RUNTIME_FIELDS = ("profile", "cache_dir", "num_workers", "device", "amp", "channels_last",
                  "deterministic", "eval_batch_size")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_version(parts=CODE, lib: pathlib.Path = _LIB) -> str:
    """A digest of the code under ``parts`` (files or folders of the library) as Python sees
    it: comments, docstrings and formatting do not count, every statement does."""
    h = hashlib.sha256()
    files = sorted(f for p in parts for f in ([lib / p] if (lib / p).is_file()
                                              else (lib / p).rglob("*.py")))
    for f in files:
        h.update(str(f.relative_to(lib)).encode())
        h.update(_statements_digest(f.read_bytes()))
    return h.hexdigest()[:16]


#: The dumped syntax tree (docstrings left out) of each source text seen, keyed by the text's
#: sha256: parsing and dumping the library's trees takes about 0.7 s, and a chapter reads
#: records hundreds of times; an edited file has other bytes, so it is parsed again.
_STATEMENTS: dict[bytes, bytes] = {}


def _statements_digest(source: bytes) -> bytes:
    key = hashlib.sha256(source).digest()
    if key not in _STATEMENTS:
        tree = _without_docstrings(ast.parse(source.decode("utf-8")))
        _STATEMENTS[key] = ast.dump(tree).encode()
    return _STATEMENTS[key]


def config_version(cfg, free=()) -> str:
    """A digest of ``cfg``'s fields that can change a measured number, less ``free`` (the
    fields the study sets itself, e.g. the schedule length it sweeps)."""
    d = cfg.to_dict()
    return digest({k: v for k, v in d.items() if k not in RUNTIME_FIELDS and k not in free})[:16]


@dataclasses.dataclass
class Recorded:
    """A recorded study as read back: ``status`` is fresh, stale, missing or damaged."""

    study: str
    profile: str
    status: str
    tables: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    message: str = ""
    reason: str = ""  # why it is stale

    @property
    def usable(self) -> bool:
        """Whether a verdict may be drawn from it (fresh)."""
        return self.status == "fresh"

    def caption(self) -> str:
        """One line: when, where and how it was recorded, and the command that re-measures."""
        if self.status in ("missing", "damaged"):
            return self.message
        return caption_line([self.provenance],
                            (self.reason or "the code behind these numbers changed")
                            if self.status == "stale" else "")


def caption_line(provenances, stale_reason: str = "") -> str:
    """The one-line caption of recorded numbers from one or more records: date, CPU (and
    flags) or GPU, precision, commit and the re-measure command, each value the records
    differ in joined by "and"; prefixed "**Stale:** <reason> since." when ``stale_reason``."""
    def joined(key, width=None):
        return " and ".join(sorted({str(p.get(key, "?"))[:width] for p in provenances}))

    flags = list(dict.fromkeys(f for p in provenances for f in p.get("cpu_flags", [])))
    cpu = joined("gpu") if all(p.get("gpu") for p in provenances) else \
        f"{joined('cpu')} ({', '.join(flags) or 'no flags read'})"
    text = (f"Recorded {joined('date', 10)} on {cpu}, {joined('precision')}, commit "
            f"{joined('commit', 7)}; re-measure: `{joined('command')}`.")
    return f"**Stale:** {stale_reason} since. " + text if stale_reason else text


def folder(profile: str, study: str, root: pathlib.Path | None = None) -> pathlib.Path:
    return pathlib.Path(root or ROOT) / profile / study


def _csv_gz(df: pd.DataFrame) -> bytes:
    # mtime=0: the same table gives the same bytes (and checksum) on every machine
    return gzip.compress(df.to_csv(index=False).encode(), mtime=0)


def write(profile: str, study: str, tables: dict[str, pd.DataFrame], provenance: dict, *,
          cfg=None, free=(), root: pathlib.Path | None = None, same=()) -> pathlib.Path:
    """Record ``tables`` of ``study`` at ``profile`` (each written atomically, then the
    provenance with their checksums, the current :func:`code_version` and, given the study's
    base ``cfg``, its :func:`config_version` without the ``free`` fields). With ``same``
    (provenance keys), a fresh record with the same tables and the same values of those keys
    is left as it is: re-measuring an unchanged run keeps the date and machine it was first
    recorded with."""
    out = folder(profile, study, root)
    blobs = {name: _csv_gz(df) for name, df in tables.items()}
    sums = {name: sha256_bytes(data) for name, data in blobs.items()}
    if same:
        old = read(profile, study, cfg=cfg, root=root)
        if old.usable and old.provenance.get("tables") == sums and all(
                old.provenance.get(k) == provenance.get(k) for k in same):
            return out
    for name, data in blobs.items():
        atomic_write(out / f"{name}.csv.gz", data)
    conf = ({} if cfg is None else
            dict(config_version=config_version(cfg, free), config_free=list(free)))
    atomic_write_json(out / "provenance.json", dict(
        provenance, study=study, profile=profile, code_version=code_version(), **conf,
        tables=sums))
    return out


def read(profile: str, study: str, *, cfg=None, root: pathlib.Path | None = None) -> Recorded:
    """The recorded ``study`` at ``profile``, with its status (never raises for a missing or
    damaged record: the message says what is wrong and how to re-measure). Given ``cfg``
    (the configuration the book runs), a record of another configuration is stale."""
    out = folder(profile, study, root)
    prov_path = out / "provenance.json"
    if not prov_path.is_file():
        return Recorded(study, profile, "missing", message=(
            f"No recorded {study!r} study at {profile!r} ({out} is absent)."))
    try:
        prov = json.loads(prov_path.read_text(encoding="utf-8"))
        tables = {}
        for name, digest in prov["tables"].items():
            data = (out / f"{name}.csv.gz").read_bytes()
            if sha256_bytes(data) != digest:
                raise ValueError(f"{name}.csv.gz does not match its checksum")
            tables[name] = pd.read_csv(io.BytesIO(gzip.decompress(data)))
    except (OSError, ValueError, KeyError, TypeError, EOFError, gzip.BadGzipFile) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return Recorded(study, profile, "damaged", message=(
            f"The recorded {study!r} study at {profile!r} is damaged ({first}); re-measure it "
            f"or restore {out} with git."))
    reason = ""
    if prov.get("code_version") != code_version():
        reason = "the training, model or data code changed"
    elif cfg is not None and "config_version" in prov and prov["config_version"] != \
            config_version(cfg, prov.get("config_free", ())):
        reason = f"the {profile!r} configuration changed"
    return Recorded(study, profile, "stale" if reason else "fresh", tables, prov, reason=reason)


__all__ = ["CODE", "ROOT", "RUNTIME_FIELDS", "Recorded", "caption_line", "code_version", "config_version",
           "folder", "read", "write"]
