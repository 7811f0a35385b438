"""Recorded predictions: the evidence of a build comes from its own runs or from the record,
one study at a time, never mixed.

Every table and claim of the book is computed from one kind of number: a variant's
probabilities per image on one split of one source (:func:`~.predictions.scored`). Those are
what the record keeps, in ``results/<profile>/runs/<run>/<source>-<split>-<by>/`` (a
:mod:`~.record` study: ``probs.csv.gz``, one row per image in the split's order and one
column per class, and its provenance: store key, checkpoint sha256, commit, CPU, precision,
date, command). The labels, masks and patients are not recorded: the world (or the real
dataset) gives them again, and the patient bootstrap recomputes exactly from the same
probabilities.

**Where a study's numbers come from** (:func:`consistent`): the mode in
``UNICHEST_EVIDENCE`` is ``auto`` (default), ``live`` or ``recorded``. In ``auto``, a run in
the artifact store is scored live and a run that is not, but is recorded, is read from the
record; a run neither stored nor recorded is trained. When one study (a table, a claim)
would then mix live and recorded runs, it is measured again from the record alone (or, when
the record lacks a part or a part is damaged, live alone): different CPUs and precisions give different numbers,
so one comparison never pairs them. ``live`` trains and scores everything (``make ledger``);
``recorded`` reads everything from the record. With ``UNICHEST_RECORD=1`` every live
score is also written to the record (``make ledger`` sets it).

Studies that read trained models rather than scores (the claims, the headroom, grounding by
class, transfer) are recorded whole, in ``results/<profile>/studies/``
(:func:`recorded_study`, :func:`recorded_table`): live when all their runs are stored, else
from the record, else measured.

Introduced in ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import os
import re

import numpy as np
import pandas as pd

from ..config import Config, ConfigError
from . import record

ENV_MODE = "UNICHEST_EVIDENCE"
ENV_RECORD = "UNICHEST_RECORD"
ENV_COMMAND = "UNICHEST_RECORD_COMMAND"
MODES = ("auto", "live", "recorded")
#: Internal mode of :func:`recorded_study`'s first try: stored runs live, nothing trained.
STORED = "stored"
_MODE: contextvars.ContextVar = contextvars.ContextVar("evidence_mode", default=None)
_USED: contextvars.ContextVar = contextvars.ContextVar("evidence_used", default=None)


class RecordMissing(LookupError):
    """A part the study needs is not in the record (or is damaged)."""


def mode() -> str:
    """The evidence mode in force: set by :func:`consistent`, else ``UNICHEST_EVIDENCE``."""
    m = _MODE.get() or os.environ.get(ENV_MODE, "auto") or "auto"
    if m not in MODES and m != STORED:
        raise ConfigError(f"{ENV_MODE}={m!r}: choose one of {', '.join(MODES)}")
    return m


def recording() -> bool:
    """Whether live scores are also written to the record (``UNICHEST_RECORD=1``)."""
    return os.environ.get(ENV_RECORD, "") not in ("", "0")


def part_name(c: Config, name: str, source: str, split: str, by: str) -> str:
    """The record folder of one run's scores: ``runs/<variant>-s<seed>-<config>/<part>``; the
    configuration digest leaves the precision out, so a record serves any machine."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"runs/{slug}-s{c.seed}-{record.config_version(c)[:10]}/{source}-{split}-{by}"


def note_used(kind: str, rec: record.Recorded | None = None) -> None:
    """Tell the enclosing study that one of its scores came from ``kind`` (live/recorded)."""
    used = _USED.get()
    if used is not None:
        used.append((kind, rec))


def read_probs(c: Config, name: str, source: str, split: str, by: str,
               classes, n: int) -> tuple[np.ndarray, record.Recorded]:
    """The recorded probabilities of one run on one split, checked against the split's size
    and classes (raises :class:`RecordMissing` when absent, damaged or of another split)."""
    rec = record.read(c.profile, part_name(c, name, source, split, by), cfg=c)
    if rec.status in ("missing", "damaged"):
        raise RecordMissing(rec.message)
    probs = rec.tables["probs"]
    if list(probs.columns) != list(classes) or len(probs) != n:
        raise RecordMissing(f"the recorded scores of {name!r} on {source} {split} do not match "
                            f"the split ({len(probs)} x {len(probs.columns)}, expected {n} x "
                            f"{len(classes)}); re-measure with `make ledger`")
    return probs.to_numpy(np.float32), rec


def has_probs(c: Config, name: str, source: str, split: str, by: str) -> bool:
    """Whether the record holds this run's scores on this split (not checked for damage)."""
    folder = record.folder(c.profile, part_name(c, name, source, split, by))
    return (folder / "provenance.json").is_file()


def write_probs(c: Config, name: str, source: str, split: str, by: str, probs: np.ndarray,
                classes, provenance: dict) -> None:
    """Record one run's probabilities (7 significant digits: AUCs recompute exactly); the same
    scores of the same checkpoint already recorded keep their first provenance."""
    df = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(classes))
    df = df.map(lambda v: float(f"{v:.7g}"))
    cmd = os.environ.get(ENV_COMMAND, "make ledger")
    record.write(c.profile, part_name(c, name, source, split, by), dict(probs=df),
                 dict(provenance, variant=name, seed=c.seed, source=source, split=split,
                      by=by, command=cmd), cfg=c, same=("checkpoint_sha256", "model_classes"))


@dataclasses.dataclass
class Evidence:
    """Where one study's numbers came from: ``status`` live, fresh or stale (recorded), and
    the one line a chapter prints under its table."""

    status: str
    caption: str

    @property
    def usable(self) -> bool:
        """Whether a verdict may be drawn (live or a fresh record)."""
        return self.status in ("live", "fresh")


def _evidence(used) -> Evidence:
    recs = [r for k, r in used if k == "recorded"]
    if not recs:
        return Evidence("live", "")
    stale = [r for r in recs if r.status == "stale"]
    text = record.caption_line([r.provenance for r in recs], stale[0].reason if stale else "")
    return Evidence("stale" if stale else "fresh", text)


def consistent(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with all its scores from one source; returns ``(result,
    Evidence)``. Nested calls run inside the outermost study's decision."""
    if _USED.get() is not None:
        return fn(*args, **kwargs), None
    first = mode()
    tries = [first] + ([m for m in ("recorded", "live") if m != first] if first == "auto" else [])
    for i, m in enumerate(tries):
        used: list = []
        t_used, t_mode = _USED.set(used), _MODE.set(m)
        try:
            out = fn(*args, **kwargs)
        except RecordMissing:  # a part absent or damaged: the next source, if any
            if i + 1 < len(tries):
                continue
            raise
        finally:
            _USED.reset(t_used)
            _MODE.reset(t_mode)
        if len({k for k, _ in used}) <= 1 or m != "auto":
            return out, _evidence(used)
    raise AssertionError("unreachable: the live try always returns")


def with_evidence(fn):
    """``fn`` (a table of a study) measured through :func:`.consistent`: all its
    scores live or all recorded; the table's ``attrs["evidence"]`` says which
    (:class:`Evidence`, with the caption a chapter prints)."""
    @functools.wraps(fn)
    def study(*args, **kwargs):
        out, ev = consistent(fn, *args, **kwargs)
        if ev is not None:
            out.attrs["evidence"] = ev
        return out
    return study


def in_mode(m: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with every score from ``m`` (``live`` or ``recorded``)."""
    token = _MODE.set(m)
    try:
        return consistent(fn, *args, **kwargs)[0]
    finally:
        _MODE.reset(token)


def no_training(stored: bool, what: str) -> None:
    """In ``recorded`` (and the internal ``stored``) mode a run that is not in the store is
    never trained: raises :class:`RecordMissing` (the study falls back to the record or to
    live, or says it is not recorded)."""
    if not stored and mode() in ("recorded", STORED):
        raise RecordMissing(f"{what} is neither stored nor recorded")


def json_default(o):
    """JSON for numpy scalars and arrays and data frames (recorded and cached results)."""
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pd.DataFrame):
        return o.to_dict(orient="list")
    raise TypeError(f"cannot record {type(o).__name__}")


def _encode(out) -> dict:
    if isinstance(out, pd.DataFrame):
        return {"table": out}
    return {"result": pd.DataFrame({"json": [json.dumps(out, default=json_default)]})}


def _decode(tables: dict):
    if "table" in tables:
        return tables["table"]
    return json.loads(tables["result"]["json"].iloc[0])


def recorded_table(name: str, stored):
    """Decorate ``fn(cfg, ...) -> DataFrame`` as a :func:`recorded_study` named ``name`` (and
    its other arguments, ``progress`` aside); ``stored(cfg, ...)`` says whether every run it
    needs is in the artifact store. The table's ``attrs["evidence"]`` says where its numbers
    come from."""
    from ..fileio import digest

    def part(args, kwargs) -> str:
        tag = digest([list(args), {k: v for k, v in kwargs.items() if k != "progress"}])
        return f"{name}-{tag[:8]}"

    def decorate(fn):
        @functools.wraps(fn)
        def study(cfg: Config, *args, **kwargs):
            out, ev = recorded_study(part(args, kwargs), cfg, fn, cfg, *args,
                                     stored=stored(cfg, *args, **kwargs), **kwargs)
            if ev is not None:
                out.attrs["evidence"] = ev
            return out

        def available(cfg: Config, *args, **kwargs) -> bool:
            """Whether this build can show the study without training: every run it needs
            is stored, or the record holds it (fresh or stale) for these arguments."""
            return bool(stored(cfg, *args, **kwargs)) or study_recorded(cfg, part(args, kwargs))

        study.available = available
        return study
    return decorate


def study_part(cfg: Config, name: str) -> str:
    """Where :func:`recorded_study` ``name`` of ``cfg`` is recorded (under the profile)."""
    return f"studies/{name}-{record.config_version(cfg)[:10]}"


def study_recorded(cfg: Config, name: str) -> bool:
    """Whether the record holds the whole study ``name`` of ``cfg`` (fresh or stale)."""
    return record.read(cfg.profile, study_part(cfg, name), cfg=cfg).status in ("fresh", "stale")


def recorded_study(name: str, cfg: Config, fn, *args, train: bool = True,
                   stored: bool | None = None, **kwargs):
    """A study whose numbers come from trained models as a whole (grounding, transfer, the
    headroom, a claim), recorded in ``results/<profile>/studies/<name>-<config>/``. Without a
    record it is measured live (training what is missing; with ``train`` False it returns
    ``(None, None)``). With one, it is live when every run it needs is in the store
    (``stored``, when the caller knows; else it is tried without training), else read from
    the record. ``live`` mode always measures, ``recorded`` mode only reads. Returns
    ``(result, Evidence)``; a live result is recorded when ``UNICHEST_RECORD=1``."""
    part = study_part(cfg, name)
    m = mode()
    if m == "live":
        return _live(part, cfg, fn, *args, **kwargs)
    rec = record.read(cfg.profile, part, cfg=cfg)
    have = rec.status in ("fresh", "stale")
    if m == "auto" and have:
        if stored:
            return _live(part, cfg, fn, *args, **kwargs)
        if stored is None:
            token = _MODE.set(STORED)
            try:
                return _live(part, cfg, fn, *args, **kwargs)
            except RecordMissing:
                pass  # a run is not stored: the record
            finally:
                _MODE.reset(token)
    if have:
        return _decode(rec.tables), Evidence(rec.status, rec.caption())
    if m == "recorded":  # no record of the whole: from the recorded scores, if they are all
        return fn(*args, **kwargs), None  # there (fn says where its numbers come from)
    if not train:
        return None, None
    return _live(part, cfg, fn, *args, **kwargs)


def _live(part: str, cfg: Config, fn, *args, **kwargs):
    from .. import hardware

    out = fn(*args, **kwargs)
    if recording():
        cmd = os.environ.get(ENV_COMMAND, "make ledger")
        record.write(cfg.profile, part, _encode(out),
                     dict(hardware.provenance(cfg.amp, cfg.device), command=cmd), cfg=cfg)
    return out, Evidence("live", "")


__all__ = ["ENV_COMMAND", "ENV_MODE", "ENV_RECORD", "Evidence", "MODES", "RecordMissing",
           "STORED", "consistent", "has_probs", "in_mode", "json_default", "mode", "no_training",
           "note_used", "part_name", "read_probs", "recorded_study", "recorded_table",
           "recording", "study_part", "study_recorded", "with_evidence", "write_probs"]
