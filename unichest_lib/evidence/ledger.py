"""The claims ledger: every claim of :mod:`.claims` measured (or read back from the cache),
with the paper's number, ours with its interval, the smallest effect the comparison could
detect, and a verdict from :func:`unichest_lib.evaluation.stats.verdict` (the table the book
shows of it is :func:`unichest_lib.book.tables.ledger_table`). Measured claims are cached on
disk (``<cache_dir>/evidence``), keyed by the configuration, the seeds and the bootstrap size.
:func:`plan` says what a build at a profile runs: seeds, bootstrap size, the grid, and whether
the claims that need extra runs are measured.

Introduced in ``notebooks/07_claims.ipynb``; chapters 02–05 show their own claims.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config, ConfigError
from ..fileio import atomic_write, digest
from ..training.keys import DIVIDE_ONLY, keyed, upstream
from . import replay
from .claims import CLAIM_KEYS, CLAIMS, measure_claim, with_source
from .measures import MIN_POS, N_BOOT, in_domain_measure
from .transfer import STUDY as TRANSFER_STUDY
from .variants import BACKBONES, GRID, SEEDS

#: Claims that need many extra runs per seed (the λ×K grid's Divide runs; a Conquer on label
#: text; Conquer and its continued control in a second world): measured when ``full`` is on
#: (see :data:`FULL`).
EXPENSIVE = ("lam_k_robust", "reports_vs_labels", "gain_grows", "meaning_headroom")
#: Claims about the embedded world's dials: real data has no dial to turn, so they are not
#: run there.
WORLD_ONLY = ("gain_grows", "meaning_headroom")
#: Per profile: whether the book measures the :data:`EXPENSIVE` claims by default. At
#: ``tutorial`` they would more than double the book's training time (measured in the README).
FULL = {"smoke": True, "tutorial": False, "paper": True}
#: The verdict of a claim that was not measured in this run (not a statistical verdict).
NOT_RUN = "not run"
#: Environment switch of the full ledger (``make ledger`` sets it to 1 for the whole build).
FULL_ENV = "UNICHEST_FULL_LEDGER"
#: How a claim that was not run tells the reader to run it.
HOW_TO_RUN = "build with `make ledger` (or run chapter 05, 06 or 07 with -p full_ledger True)"


def not_run_note(shown: dict[str, bool], *requirements: str) -> str:
    """The one note a chapter prints for its studies that this build did not run: ``shown``
    maps each study's name to whether it ran; the note names those that did not, then
    :data:`HOW_TO_RUN` and any further ``requirements`` (e.g. "the dial studies need the
    embedded world"). Empty when every study ran."""
    missing = [name for name, ran in shown.items() if not ran]
    if not missing:
        return ""
    return (f"Not run in this build: {'; '.join(missing)}. To add them, "
            + "; ".join((HOW_TO_RUN,) + requirements) + ".")


def full_ledger(cfg: Config, full: bool | None = None) -> bool:
    """Whether to measure (and show) the :data:`EXPENSIVE` claims: ``full`` when given; else
    the environment switch :data:`FULL_ENV` (``1``/``0``) when set; else the profile's
    :data:`FULL`; and at a profile where it is off, True anyway once every expensive claim is
    in the cache or in the record (``make ledger`` measured them: the book then shows them,
    from this build's runs or from the record)."""
    if full is not None:
        return bool(full)
    env = os.environ.get(FULL_ENV, "").strip().lower()
    if env:
        if env not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"{FULL_ENV}={env!r}: use 1 (measure every claim) or 0")
        return env in ("1", "true", "yes")
    if FULL[cfg.profile]:
        return True
    seeds = SEEDS[cfg.profile]
    return all(_cache_file(cfg, key, seeds).is_file()
               or replay.study_recorded(cfg, f"claim-{key}") for key in EXPENSIVE)


def study_on(cfg: Config, full: bool | None, available) -> bool:
    """Whether a chapter shows an optional study that needs runs of its own:
    :func:`full_ledger` when ``full`` is given, the environment switch is set or the profile
    runs the full ledger; otherwise only when ``available()`` says it needs no training (its
    runs are stored, or it is recorded)."""
    if full_asked(cfg, full):
        return full_ledger(cfg, full)
    return bool(available())


def full_asked(cfg: Config, full: bool | None = None) -> bool:
    """Whether the full ledger was asked for (``full`` given, the environment switch set, or a
    profile that runs it), so that a study may train the runs it misses: :func:`full_ledger`
    is also True when the record merely holds every expensive claim, to show them."""
    return full is not None or bool(os.environ.get(FULL_ENV, "").strip()) or FULL[cfg.profile]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a build at one profile runs: the training ``seeds``, the bootstrap resamples by
    patient (``n_boot``), the positives and negatives a class needs in a test split to enter
    a macro mean (``min_pos``), the (K values, λ values) grid of the robustness claim
    (``grid``), the image backbones chapter 05 compares (``backbones``) and whether the
    claims that need extra runs per seed are measured (``full``, :func:`full_ledger`), and
    whether the optional studies may train what they miss (``train``: the full ledger asked
    for, not merely found in the record)."""

    seeds: tuple
    n_boot: int
    min_pos: int
    grid: tuple
    backbones: tuple
    full: bool
    train: bool


def plan(cfg: Config, full: bool | None = None) -> Plan:
    """The :class:`Plan` of ``cfg``'s profile, with ``full`` resolved by :func:`full_ledger`."""
    p = cfg.profile
    return Plan(seeds=tuple(SEEDS[p]), n_boot=N_BOOT[p], min_pos=MIN_POS[p], grid=GRID[p],
                backbones=tuple(BACKBONES[p]), full=full_ledger(cfg, full),
                train=full_asked(cfg, full) and full_ledger(cfg, full))


# ---- the ledger -----------------------------------------------------------------------------
def _cache_file(cfg: Config, key: str, seeds) -> pathlib.Path:
    version = {"claim_version": CLAIM_VERSIONS[key]} if key in CLAIM_VERSIONS else {}
    blob = digest({"claim": key, "config": upstream(cfg), "divide": keyed(cfg, DIVIDE_ONLY),
                    "seeds": list(seeds), "n_boot": N_BOOT[cfg.profile], "version": VERSION,
                    **version})
    return pathlib.Path(cfg.cache_dir) / "evidence" / f"{key}-{blob[:16]}.json"


#: Bump when a measurement's definition changes (invalidates the cached claim rows).
VERSION = 1
#: Per-claim versions, bumped when one claim's definition changes (only its rows are
#: recomputed). A renamed claim starts afresh: grounding_vs_baselines (against the strongest
#: baseline per class) replaced grounding_vs_random (against a random peak).
#: transfer_vs_random 2 = every protocol and portion with a verdict each (it was the linear
#: probe at 100 % alone); it also carries the transfer protocol's version.
CLAIM_VERSIONS: dict[str, object] = {"transfer_vs_random": f"2, {TRANSFER_STUDY}"}
#: Claims whose recorded study's name carries their protocol's version (a record of an older
#: protocol, ``claim-<key>-...``, is then never read as this one's).
RECORD_TAGS = {"transfer_vs_random": TRANSFER_STUDY}


def ledger_rows(cfg: Config, keys: Sequence[str] | None = None, *, full: bool | None = None,
            progress: bool = True) -> pd.DataFrame:
    """The claims ledger rows of ``keys`` (default: every claim), measured or read back
    from the cache. Columns: claim, chapter, text, effect, paper, mean, lo, hi, mde,
    n_seeds, per_seed, n_test, flagged, verdict, detail. With ``full`` False (default: the
    profile's :data:`FULL`, see :func:`full_ledger`) the :data:`EXPENSIVE` claims are
    measured only when their result is already cached; otherwise their verdict is
    :data:`NOT_RUN`."""
    keys = CLAIM_KEYS if keys is None else tuple(keys)
    full = full_ledger(cfg, full)
    seeds = SEEDS[cfg.profile]
    rows = []
    for key in keys:
        claim = next((c for c in CLAIMS if c.key == key), None)
        if claim is None:
            raise ConfigError(f"unknown claim {key!r}; choose one of {CLAIM_KEYS}")
        file = _cache_file(cfg, key, seeds)
        res = None
        if key in WORLD_ONLY and cfg.data != "embedded":
            res = _not_run(seeds, "turns a dial of the embedded world; real data has none")
        elif not full and key in EXPENSIVE and not file.is_file():
            res = _claim(cfg, key, progress, train=False) or _not_run(
                seeds, f"needs extra runs per seed; {HOW_TO_RUN}")
        elif file.is_file():
            try:
                res = json.loads(file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                res = None
        if res is None:
            res = _claim(cfg, key, progress)
            if res.get("evidence", "live") == "live":  # a recorded claim is read again each time
                atomic_write(file, json.dumps(res, default=replay.json_default))
        rows.append(dict(claim=claim.text, key=key, chapter=claim.chapter, effect=claim.effect,
                         paper=claim.paper, **{k: res.get(k) for k in (
                             "mean", "lo", "hi", "mde", "n_seeds", "per_seed", "n_test",
                             "flagged", "verdict", "detail", "grid", "per_level")},
                         evidence=res.get("evidence", "live"), caption=res.get("caption", "")))
    return pd.DataFrame(rows)


def _claim(cfg: Config, key: str, progress: bool, train: bool = True) -> dict | None:
    """One claim: live when its runs are stored, else from the record
    (``results/<profile>/studies/claim-<key>-...``), else measured (``train``; else None)."""
    name = "-".join(["claim", key] + ([RECORD_TAGS[key]] if key in RECORD_TAGS else []))
    res, ev = replay.recorded_study(name, cfg, measure_claim, cfg, key, progress, train=train)
    if res is not None and ev is not None and ev.status != "live":
        with_source(res, ev)  # a live result says its source itself
    return res


def _not_run(seeds, detail: str) -> dict:
    """The ledger row of a claim this build does not measure, saying why."""
    nan = float("nan")
    return dict(mean=nan, lo=nan, hi=nan, mde=nan, n_seeds=len(seeds), per_seed=[], n_test="",
                flagged="", verdict=NOT_RUN, detail=detail, evidence="", caption="")


def chapter_claims(cfg: Config, chapter: str, *, full: bool | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """The ledger rows of one chapter's claims (``chapter`` = "02" ... "05")."""
    return ledger_rows(cfg, [c.key for c in CLAIMS if c.chapter == chapter], full=full,
                       progress=progress)


def grid_table(cfg: Config, *, progress: bool = True) -> pd.DataFrame:
    """Mean in-domain test aAUC of UniChest for every (K, λ) of :data:`GRID` (the default
    setting included) over the profile's seeds: columns K, lam, mean, lo, hi, n_seeds."""
    Ks, lams = GRID[cfg.profile]
    rows = []
    for k in Ks:
        for x in lams:
            extra = {} if (k == cfg.K and x == cfg.lam) else dict(K=k, lam=x)
            summ = in_domain_measure(cfg, "UniChest", progress=progress, **extra).summary()
            rows.append(dict(K=k, lam=x, mean=summ["mean"], lo=summ["lo"], hi=summ["hi"],
                             n_seeds=summ["n_seeds"]))
    return pd.DataFrame(rows)


__all__ = ["EXPENSIVE", "FULL", "FULL_ENV", "HOW_TO_RUN", "NOT_RUN", "VERSION", "WORLD_ONLY",
           "Plan", "chapter_claims", "full_ledger", "grid_table", "ledger_rows", "not_run_note",
           "full_asked", "plan", "study_on"]
