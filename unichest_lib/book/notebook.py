"""Running a chapter: the two calls that open and close every notebook, its parameter checks
and how it prints.

``cfg = setup(profile, seed=seed, ...)`` validates the notebook's parameters through
:func:`unichest_lib.config.resolve` *before any work* (a bad value stops the notebook with a
message naming it), seeds the random generators, registers the offline plotly renderer
(:func:`unichest_lib.book.figures.register_renderer`) and prints the hardware, the configuration
and where the numbers come from. ``finish()`` prints the chapter's wall time.

The profile: an explicit ``profile`` parameter (``papermill ... -p profile smoke``) wins;
a parameter left at ``None`` falls back to the ``UNICHEST_PROFILE`` environment variable
(``make book PROFILE=smoke`` sets it), then to ``"tutorial"``.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import os
import platform
import textwrap
import time
from pathlib import Path
from typing import Any

from ..config import PROFILES, Config, ConfigError, describe, resolve
from ..training.rng import seed_everything

PROFILE_ENV = "UNICHEST_PROFILE"
DEFAULT_PROFILE = "tutorial"
WIDTH = 76  # characters per printed line (the book shows about 80 without scrolling)
_START: list[float] = []


def choose_profile(profile: str | None) -> tuple[str, str]:
    """The profile to use and where it came from ("parameter", the env variable, "default")."""
    if profile is not None:
        return profile, "parameter"
    env = os.environ.get(PROFILE_ENV, "").strip()
    if env:
        if env not in PROFILES:
            raise ConfigError(f"environment variable {PROFILE_ENV}={env!r} is not a profile; "
                              f"choose one of {PROFILES} or unset it")
        return env, PROFILE_ENV
    return DEFAULT_PROFILE, "default"


def anchor_cache(cfg: Config) -> Config:
    """In a source checkout, a relative ``cache_dir`` is taken from the repository root, so a
    chapter run by the book builder (whose working folder is ``notebooks/``) shares the world
    and checkpoints with papermill, the tests and the command line run from the root."""
    root = Path(__file__).resolve().parents[2]
    if Path(cfg.cache_dir).is_absolute() or not (root / "pyproject.toml").is_file():
        return cfg
    return cfg.replace(cache_dir=str(root / cfg.cache_dir))


def hardware() -> str:
    """One line: CPU model and cores, torch threads, native bf16 (so whether ``amp`` is in
    effect, see :mod:`unichest_lib.hardware`), accelerator, Python and torch versions."""
    import torch

    from ..hardware import cpu_has_native_bf16, cpu_name

    gpu = (f"CUDA {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
           if torch.cuda.is_available() else "no GPU")
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return (f"{cpu_name()} ({platform.machine()}, {bf16}), {os.cpu_count()} cores visible, "
            f"torch threads {torch.get_num_threads()}; {gpu}; Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def banner(cfg: Config) -> str:
    """Where this chapter's numbers come from, in one sentence."""
    if cfg.data == "embedded":
        return ("Numbers in this chapter come from the embedded procedural world "
                f"(world_seed={cfg.world_seed}, heterogeneity={cfg.heterogeneity}); they show "
                "how the method behaves, not clinical performance.")
    return f"Numbers in this chapter come from the real datasets described by {cfg.data!r}."


def setup(profile: str | None = None, *, quiet: bool = False, **params: Any) -> Config:
    """Validate the notebook's parameters and prepare the session; returns the :class:`Config`.

    ``params`` are configuration values by name (``None`` = keep the profile's value). Any
    unknown name or invalid value raises :class:`~unichest_lib.config.ConfigError` first."""
    name, origin = choose_profile(profile)
    cfg = shown = resolve(name, **params)  # printed before anchoring: no machine's paths
    if params.get("cache_dir") is None:
        cfg = anchor_cache(cfg)
    _START[:] = [time.perf_counter()]
    seed_everything(cfg.seed)  # Python, NumPy, torch; data order and model init use cfg.seed
    import pandas as pd

    pd.set_option("display.max_colwidth", 120)  # dataset titles, class lists: not cut at 50
    from .figures import register_renderer

    register_renderer()
    if not quiet:
        for label, text in (("Hardware", hardware()),
                            ("Config", f"{describe(shown)} [profile from {origin}]"),
                            ("Data", banner(cfg))):
            print(textwrap.fill(text, WIDTH, initial_indent=f"{label:<9}: ",
                                subsequent_indent=" " * 11))
    return cfg


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """A notebook-only integer parameter, validated like the configuration's."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"parameter {name!r} = {value!r} must be an integer >= {minimum}")
    return value


def check_choice(name: str, value: Any, choices) -> Any:
    """A notebook-only parameter (or each item of a list of them) that must be one of ``choices``."""
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if v not in choices:
            raise ConfigError(f"parameter {name!r} has value {v!r}; choose from {tuple(choices)}")
    return value


def wrap(text: str, indent: int = 2) -> str:
    """``text`` wrapped to the book's line width, each of its own lines separately
    (continuation lines indented by ``indent``)."""
    return "\n".join(textwrap.fill(line, WIDTH, subsequent_indent=" " * indent) if line else ""
                     for line in text.splitlines())


# Column names the library keeps machine-friendly whose readable form is more than the name
# with spaces for underscores (that is :func:`header`'s fallback).
HEADERS = {
    "n_train": "training images", "val_aAUC": "validation aAUC",
    "conquer_aAUC": "Conquer aAUC", "divide_aAUC": "Divide aAUC",
    "val_all_mean": "all-source val aAUC (mean)", "ci_low": "95 % CI low",
    "ci_high": "95 % CI high", "best_epoch_mean": "selected epoch (mean)",
    "test_all_mean": "test aAUC (mean, not used)",
}


def header(name):
    """How a table shows the column or index name ``name``: :data:`HEADERS`, else
    underscores become spaces. Non-strings (numbers, ``None``) are left as they are."""
    if not isinstance(name, str):
        return name
    return HEADERS.get(name, name.replace("_", " "))


def readable(df: "pd.DataFrame") -> "pd.DataFrame":
    """A copy of ``df`` for display: every column label, index name and column-level name
    passed through :func:`header`. Values and row labels are unchanged."""
    out = df.copy()
    out.columns = out.columns.map(lambda c: tuple(map(header, c)) if isinstance(c, tuple)
                                  else header(c))
    out.columns.names = [header(n) for n in df.columns.names]
    out.index.names = [header(n) for n in df.index.names]
    return out


def markdown(text: str):
    """``text`` rendered as Markdown in the notebook (generated prose, e.g. verdicts)."""
    from IPython.display import Markdown

    return Markdown(text)


class Plain:
    """A text that a notebook shows without quotes (its ``repr`` is the text itself), so
    ``{glue:text}`name``` in the book reads ``+0.012 [-0.045, +0.068]``, not ``'+0.012 ...'``."""

    def __init__(self, text: str):
        self.text = str(text)

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other) -> bool:
        return str(other) == self.text

    def __str__(self) -> str:
        return self.text

    __hash__ = None


def glue(name: str, value: Any) -> Any:
    """Hand ``value`` to the chapter's markdown under ``name`` (myst-nb's ``glue``, not shown
    where it is computed): a sentence then reads ``{glue:text}`name:.3f``` (a number) or
    ``{glue:text}`name``` (a text such as a verdict or an interval). Numbers are stored as
    plain floats or ints, texts as :class:`Plain`; returns what was glued."""
    import numbers

    from myst_nb import glue as _glue

    if isinstance(value, bool):
        value = Plain("yes" if value else "no")
    elif isinstance(value, numbers.Integral):
        value = int(value)
    elif isinstance(value, numbers.Real):
        value = float(value)
    elif not isinstance(value, Plain):
        value = Plain(str(value))
    _glue(name, value, display=False)
    return value


def glue_claims(rows: "pd.DataFrame", prefix: str = "") -> dict[str, Any]:
    """Glue each claim of ledger ``rows`` (``evidence.chapter_claims``) for the chapter's
    prose: ``<prefix><key>_verdict`` (the verdict word), ``<prefix><key>_ci`` (mean and 95 %
    interval) and ``<prefix><key>_seeds``. Returns the glued values by name."""
    from ..evaluation.stats import fmt_interval

    out = {}
    for _, r in rows.iterrows():
        k = f"{prefix}{r['key']}"
        out[f"{k}_verdict"] = glue(f"{k}_verdict", r["verdict"])
        out[f"{k}_ci"] = glue(f"{k}_ci", fmt_interval(r["mean"], r["lo"], r["hi"]))
        out[f"{k}_seeds"] = glue(f"{k}_seeds", int(r["n_seeds"]))
    return out


LIVE_LINE = "Measured by this build's own runs."


def evidence_line(table: "pd.DataFrame") -> str:
    """The line a chapter prints under an evidence table: where its numbers come from. A
    table of ``evidence`` carries it in ``attrs["evidence"]``; ledger rows in their
    ``caption`` column (one line per distinct recording). Live numbers say so."""
    ev = table.attrs.get("evidence")
    if ev is not None:
        return ev.caption or LIVE_LINE
    if "caption" in table.columns:
        caps = [c for c in dict.fromkeys(table["caption"].fillna("")) if c]
        return "\n".join(caps) if caps else LIVE_LINE
    return LIVE_LINE


def elapsed() -> float:
    """Seconds since the last :func:`setup` (0 if it was never called)."""
    return time.perf_counter() - _START[0] if _START else 0.0


def finish() -> float:
    """Print and return the wall time since :func:`setup`."""
    t = elapsed()
    print(wrap(f"Wall time: {t:.1f} s ({hardware()})", indent=11))
    return t


__all__ = ["HEADERS", "LIVE_LINE", "PROFILE_ENV", "Plain", "anchor_cache", "banner",
           "check_choice", "check_int", "choose_profile", "elapsed", "evidence_line", "finish",
           "glue", "glue_claims", "hardware", "header", "markdown", "readable", "setup", "wrap"]
