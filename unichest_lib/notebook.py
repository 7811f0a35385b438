"""The two calls that open and close every chapter notebook.

``cfg = setup(profile, seed=seed, ...)`` validates the notebook's parameters through
:func:`unichest_lib.config.resolve` *before any work* (a bad value stops the notebook with a
message naming it), seeds the random generators, registers the offline plotly renderer
(:func:`unichest_lib.figures.register_renderer`) and prints the hardware, the configuration
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

from .config import PROFILES, Config, ConfigError, describe, resolve

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
    root = Path(__file__).resolve().parent.parent
    if Path(cfg.cache_dir).is_absolute() or not (root / "pyproject.toml").is_file():
        return cfg
    return cfg.replace(cache_dir=str(root / cfg.cache_dir))


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """One line: CPU model and cores, torch threads, native bf16 (so whether ``amp`` is in
    effect, see :mod:`unichest_lib.hardware`), accelerator, Python and torch versions."""
    import torch

    from .hardware import cpu_has_native_bf16

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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the data order and model init are seeded by ``cfg``)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(profile: str | None = None, *, quiet: bool = False, **params: Any) -> Config:
    """Validate the notebook's parameters and prepare the session; returns the :class:`Config`.

    ``params`` are configuration values by name (``None`` = keep the profile's value). Any
    unknown name or invalid value raises :class:`~unichest_lib.config.ConfigError` first."""
    name, origin = choose_profile(profile)
    cfg = shown = resolve(name, **params)  # printed before anchoring: no machine's paths
    if params.get("cache_dir") is None:
        cfg = anchor_cache(cfg)
    _START[:] = [time.perf_counter()]
    seed_everything(cfg.seed)
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


_CARD_FIELDS = ("role", "access", "licence", "provenance", "citation")


def cards_markdown(table, kind: str) -> str:
    """The data cards of one ``kind`` ("real" or "embedded") of
    :func:`unichest_lib.cards.load_cards` as Markdown: per card, a heading, a short field
    list and the card's own text with its headings demoted under the heading."""
    import re

    if len(table) == 0 or "kind" not in table:
        return "*No data cards found in `data_cards/`.*"
    parts = []
    for _, card in table[table["kind"] == kind].iterrows():
        body = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ",
                      card["body"], flags=re.M)
        body = re.sub(r"\A### [^\n]*\n", "", body)  # the card's own title: we print ours
        fields = [f"* **{f}**: {card[f]}" for f in _CARD_FIELDS
                  if f in card and isinstance(card[f], str) and card[f]]
        if isinstance(card.get("stats_command"), str):
            fields.append(f"* **stats_command**: `{card['stats_command']}`")
        parts.append(f"### {card['title']} (`{card['name']}`)\n\n" + "\n".join(fields)
                     + _generation_block(card) + f"\n\n{body}\n")
    return "\n".join(parts) or f"*No data cards of kind {kind!r}.*"


def _generation_block(card) -> str:
    """An embedded card's generation settings (label space, images per profile, the
    ``dials`` that differ from the neutral world) as Markdown; '' for a real card."""

    def value(key):
        v = card.get(key)
        return v if isinstance(v, (dict, list)) else None

    label_space, n_images, dials = value("label_space"), value("n_images"), value("dials")
    if not (label_space or n_images or dials):
        return ""
    out = []
    if label_space:
        out.append(f"* **label space** ({len(label_space)}): {', '.join(label_space)}")
    if n_images:
        out.append("* **images**: " + ", ".join(f"{n} at `{p}`" for p, n in n_images.items()))
    if dials:
        groups = "; ".join(f"{group}: " + ", ".join(f"{k} {v}" for k, v in sorted(vals.items()))
                           for group, vals in dials.items() if isinstance(vals, dict) and vals)
        out.append("* **dials** (the values that differ from the neutral world, at "
                   f"`heterogeneity = 1`): {groups or 'none'}")
    return "\n" + "\n".join(out)


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


def elapsed() -> float:
    """Seconds since the last :func:`setup` (0 if it was never called)."""
    return time.perf_counter() - _START[0] if _START else 0.0


def finish() -> float:
    """Print and return the wall time since :func:`setup`."""
    t = elapsed()
    print(wrap(f"Wall time: {t:.1f} s ({hardware()})", indent=11))
    return t


# ---- helpers of chapters 02-04 (training results and the MoE-QN) -------------------------
def training_history(cfg: Config, stage: str) -> "pd.DataFrame":
    """The training history (one row per step, one validation row per epoch) of the store's
    ``stage`` checkpoint for ``cfg``, read from the run's last checkpoint (trains if missing).
    Introduced in ``notebooks/02_conquer.ipynb``."""
    import pandas as pd

    from . import checkpoints, store

    store.checkpoint(cfg, stage)
    last = store.artifact_dir(cfg, stage) / "run" / "last"
    if not checkpoints.exists(last):
        raise FileNotFoundError(f"no training run for the {stage} artifact of this configuration "
                                f"at {last}; delete {last.parent.parent} to retrain it")
    return pd.DataFrame(checkpoints.read_meta(last)["extra"]["history"])


def query_network_table(model) -> "pd.DataFrame":
    """Trainable parameters of each query network of ``model`` (QN¹ = shared, then the K−1
    experts, which are stored stacked and share nothing), plus the gate Φ1 and projection Φ2.
    Introduced in ``notebooks/03_divide.ipynb``."""
    import pandas as pd

    def n(m):
        return 0 if m is None else sum(p.numel() for p in m.parameters())

    k = model.cfg.K
    rows = [dict(part="QN1 (shared)", role="query network", parameters=n(model.qn1))]
    per_expert = n(model.experts) // (k - 1) if k > 1 else 0
    rows += [dict(part=f"QN{j} (expert)", role="query network", parameters=per_expert)
             for j in range(2, k + 1)]
    if k > 1:
        rows += [dict(part="gate Φ1", role="ω = softmax(Φ1(Ī))", parameters=n(model.gate)),
                 dict(part="projection Φ2", role="ω̄ = Φ2(ω), for L_SCL", parameters=n(model.scl_proj))]
    return pd.DataFrame(rows).set_index("part")


def mean_gate_by_source(model, cfg: Config, sources=None, split: str = "valid") -> "pd.DataFrame":
    """Mean gate weights ω (Eq. 5) per source: rows sources, columns experts QN2..QNK.
    Each row sums to 1; a source that leans on one expert has one large value.
    Introduced in ``notebooks/03_divide.ipynb``."""
    import pandas as pd
    import torch

    from .data import make_dataset, make_loader
    from .evaluate import autocast

    if model.stage != "divide" or model.cfg.K < 2:
        raise ValueError(f"mean_gate_by_source needs a Divide-stage model with K >= 2 "
                         f"(got stage {model.stage!r}, K={model.cfg.K})")
    device = next(model.parameters()).device
    rows = {}
    model.eval()
    for src in tuple(cfg.sources if sources is None else sources):
        gates = []
        with torch.inference_mode(), autocast(cfg, device):
            for batch in make_loader(make_dataset(cfg, [src], split), cfg, train=False):
                gates.append(model(batch["image"].to(device))["gate"].float().cpu())
        rows[src] = torch.cat(gates).mean(0).numpy()
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=[f"QN{j}" for j in range(2, model.cfg.K + 1)])


__all__ = ["PROFILE_ENV", "banner", "cards_markdown", "check_choice", "check_int", "choose_profile", "elapsed", "finish", "hardware", "markdown", "mean_gate_by_source", "query_network_table", "setup", "training_history"]
