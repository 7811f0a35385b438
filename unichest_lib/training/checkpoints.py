"""Safe checkpoints: ``safetensors`` tensors plus a JSON record of the full configuration.

A checkpoint at ``path`` is two files written atomically (temporary file + ``os.replace``,
the JSON last):

``<path>.safetensors``  the model state, optionally the optimiser's state and extra tensors
                        (RNG states for resuming), under prefixed names
``<path>.json``         the full :class:`~unichest_lib.config.Config`, library version, class
                        list, stage, K, d, the sha256 of the tensor file, the structure of the
                        optimiser state (so it can be rebuilt without pickle), the scheduler
                        state and any JSON ``extra``

Loading never executes code (tensors from ``safetensors``, the rest from JSON; a legacy ``.pt``
only with ``torch.load(..., weights_only=True)``) and refuses another architecture by diff.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
from typing import Any, Mapping, Sequence

from ..fileio import atomic_write, atomic_write_json, sha256_bytes
from .keys import recorded

FORMAT = "unichest-checkpoint/1"

#: Fields that decide tensor shapes, and ``output_stride`` (what the encoder computes). ``K`` and
#: ``scl_dim`` shape only Divide's modules: a Conquer checkpoint is not compared on them.
ARCH_FIELDS = ("method", "backbone", "output_stride", "embed_dim", "text_model",
               "n_decoder_layers", "n_heads", "ffn_dim", "K", "scl_dim")
DIVIDE_ARCH_FIELDS = ("K", "scl_dim")
#: Values that add a tensor (L_BCL's learnable scale): compared by whether each side has it.
TENSOR_VALUES = {"bcl_variant": "learnable"}

_MODEL = "model."
_OPTIM = "optimizer."
_EXTRA = "extra."


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not match the requested configuration."""


def files(path) -> tuple[pathlib.Path, pathlib.Path]:
    """The (tensor file, JSON file) of checkpoint ``path`` (suffix-free, or either file)."""
    p = pathlib.Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def exists(path) -> bool:
    """True when both files of checkpoint ``path`` are present."""
    t, j = files(path)
    return t.exists() and j.exists()


# ---- optimiser state without pickle -----------------------------------------------------
def _flatten_optimizer(state: Mapping) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON index of the rest."""
    import torch

    tensors, index = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, slots in state["state"].items():
        entry = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                name = f"{_OPTIM}{pid}.{key}"
                tensors[name] = value
                entry[key] = {"tensor": name}
            else:
                entry[key] = {"value": value}
        index["state"][str(pid)] = entry
    return tensors, index


def _unflatten_optimizer(tensors: Mapping, index: Mapping) -> dict:
    state = {}
    for pid, entry in index["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if "tensor" in v else v["value"])
                           for k, v in entry.items()}
    return {"state": state, "param_groups": [dict(g) for g in index["param_groups"]]}


def _jsonable(obj: Any) -> Any:
    """Tuples to lists, so a round trip through JSON compares equal."""
    return json.loads(json.dumps(obj))


# ---- frozen pre-trained weights are not copied into every checkpoint ----------------------
def pretrained_prefixes(model, cfg) -> list[str]:
    """State-dict prefixes of weights that never train and are rebuilt from their source:
    the text backbone when ``cfg.freeze_text`` (reloaded from ``cfg.text_model``). They are
    left out of the tensor file; their fingerprint is recorded and checked on load."""
    enc = getattr(model, "text_encoder", None)
    if cfg.freeze_text and getattr(enc, "backbone_frozen", False):
        return ["text_encoder.backbone."]
    return []


def fingerprint(tensors: Mapping) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    import torch

    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def load_model_state(model, tensors: Mapping, meta: Mapping, *, skip: Sequence[str] = (),
                     source: str = "checkpoint", strict: bool = True) -> None:
    """Load the model tensors of a checkpoint into ``model``; keys in ``skip`` are left as
    they are. Weights the checkpoint omitted (see :func:`pretrained_prefixes`) must already
    be in ``model`` with the recorded fingerprint; any other missing tensor is an error."""
    state = model.state_dict()
    saved = model_state(tensors)
    for prefix, digest in meta.get("omitted", {}).items():
        part = {k: v for k, v in state.items() if k.startswith(prefix)}
        if fingerprint(part) != digest:
            raise CheckpointError(
                f"{source} left out the frozen weights {prefix}* and the ones loaded now differ "
                f"from those it was trained with: check that text_model = "
                f"{meta['config'].get('text_model')!r} points at the same model")
    omitted = tuple(meta.get("omitted", {}))
    skip = set(skip)
    wanted = [k for k in state if k not in skip and not any(k.startswith(p) for p in omitted)]
    missing = [k for k in wanted if k not in saved]
    unexpected = [k for k in saved if k not in state]
    if strict and (missing or unexpected):
        raise CheckpointError(f"{source} does not fit the model: missing {missing[:5]} "
                              f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    model.load_state_dict({k: saved[k] for k in wanted if k in saved}, strict=False)


# ---- save ---------------------------------------------------------------------------------
def save(path, model, cfg, *, optimizer=None, scheduler=None, extra: Mapping | None = None,
         extra_tensors: Mapping | None = None) -> pathlib.Path:
    """Write checkpoint ``path`` (``.safetensors`` + ``.json``) atomically; returns ``path``.

    ``model`` is a :class:`~unichest_lib.model.UniChest` (``classes`` and ``stage`` are
    recorded); ``extra`` must be JSON-able; ``extra_tensors`` are stored as tensors (e.g.
    RNG states). Non-finite parameters are refused: a NaN checkpoint is never written.
    """
    import torch
    from safetensors.torch import save as st_save

    from .. import __version__

    tensor_file, json_file = files(path)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    omitted = {}
    for prefix in pretrained_prefixes(model, cfg):
        part = {k: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        omitted[prefix] = fingerprint(part)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to write checkpoint {tensor_file}: non-finite values "
                              f"in {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    tensors = {_MODEL + k: v for k, v in state.items()}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "library_version": __version__,
        "config": cfg.to_dict(),
        "classes": list(getattr(model, "classes", ())),
        "stage": getattr(model, "stage", None),
        "K": cfg.K,
        "d": cfg.embed_dim,
        "extra": _jsonable(dict(extra or {})),
        "omitted": omitted,
    }
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        meta["optimizer"] = _jsonable(meta["optimizer"])
        tensors.update(opt_tensors)
    if scheduler is not None:
        meta["scheduler"] = _jsonable(scheduler.state_dict())
    for k, v in (extra_tensors or {}).items():
        tensors[_EXTRA + k] = torch.as_tensor(v)
    # contiguous CPU copies without shared storage, as safetensors requires
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    blob = st_save(tensors)
    meta["sha256"] = sha256_bytes(blob)
    meta["n_bytes"] = len(blob)
    atomic_write(tensor_file, blob, fsync=True)
    atomic_write_json(json_file, meta, fsync=True)  # last: complete once its JSON exists
    return tensor_file.with_suffix("")


# ---- load ---------------------------------------------------------------------------------
def read_meta(path) -> dict:
    """The JSON record of checkpoint ``path`` (raises CheckpointError if missing/unreadable)."""
    tensor_file, json_file = files(path)
    if not json_file.exists() or not tensor_file.exists():
        raise CheckpointError(
            f"checkpoint {tensor_file.with_suffix('')} not found: expected both {tensor_file.name} "
            f"and {json_file.name} in {tensor_file.parent}")
    try:
        meta = json.loads(json_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint record {json_file} is not valid JSON ({e}); "
                              "the file is damaged — delete the checkpoint and retrain") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_file} is not a {FORMAT} record (format={meta.get('format')!r})")
    return meta


def read_tensors(path, meta: Mapping | None = None) -> tuple[dict, dict]:
    """All tensors of checkpoint ``path`` after verifying the sha256; returns (tensors, meta)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    meta = dict(meta or read_meta(path))
    tensor_file, _ = files(path)
    blob = tensor_file.read_bytes()
    digest = sha256_bytes(blob)
    if digest != meta["sha256"]:
        raise CheckpointError(
            f"checkpoint {tensor_file} fails its checksum ({len(blob)} bytes, sha256 {digest[:12]}…; "
            f"the record expects {meta.get('n_bytes')} bytes, sha256 {meta['sha256'][:12]}…): "
            "the file is truncated or was modified — delete it and retrain or re-download")
    try:
        return st_load(blob), meta
    except SafetensorError as e:  # pragma: no cover - checksum catches damage first
        raise CheckpointError(f"checkpoint {tensor_file} cannot be parsed: {e}") from None


def config_diff(saved: Mapping, cfg, fields=ARCH_FIELDS) -> list[str]:
    """Lines ``"K: checkpoint 4, requested 3"`` for each of ``fields`` that differs (a field
    the checkpoint predates counts at its old value: :func:`.keys.recorded`)."""
    want = cfg.to_dict()
    return [f"{f}: checkpoint {recorded(saved, f)!r}, requested {want[f]!r}"
            for f in fields if recorded(saved, f) != want[f]]


def check_compatible(meta: Mapping, cfg, classes=None) -> None:
    """Raise CheckpointError listing every architecture field (and :data:`TENSOR_VALUES`, and
    the class list) that differs between checkpoint ``meta`` and the requested ``cfg``."""
    conquer, rec = meta.get("stage") == "conquer", meta["config"]
    diff = config_diff(rec, cfg, [f for f in ARCH_FIELDS
                                  if not (conquer and f in DIVIDE_ARCH_FIELDS)])
    diff += [f"{line} (only {v!r} has its tensor)" for f, v in TENSOR_VALUES.items()
             for line in config_diff(rec, cfg, [f]) if (rec.get(f) == v) != (getattr(cfg, f) == v)]
    if classes is not None and list(classes) != list(meta["classes"]):
        saved, want = list(meta["classes"]), list(classes)
        only_saved = [c for c in saved if c not in want]
        only_want = [c for c in want if c not in saved]
        detail = (f"only in checkpoint {only_saved}, only requested {only_want}"
                  if only_saved or only_want else "same names in a different order")
        diff.append(f"classes: {detail}")
    if diff:
        raise CheckpointError(
            "checkpoint was trained with a different configuration:\n  " + "\n  ".join(diff)
            + "\nLoad it with cfg=None to use its own configuration, or retrain.")


def model_state(tensors: Mapping) -> dict:
    return {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}


def model_key(name: str) -> str:
    """The model state-dict key of a tensor-file name ("" for non-model tensors)."""
    return name[len(_MODEL):] if name.startswith(_MODEL) else ""


def extra_tensors(tensors: Mapping) -> dict:
    return {k[len(_EXTRA):]: v for k, v in tensors.items() if k.startswith(_EXTRA)}


def optimizer_state(tensors: Mapping, meta: Mapping) -> dict | None:
    """The optimiser ``state_dict`` stored in a checkpoint, or None when it has none."""
    if "optimizer" not in meta:
        return None
    return _unflatten_optimizer(tensors, meta["optimizer"])


def saved_config(meta: Mapping):
    """The :class:`Config` a checkpoint was written with."""
    from ..config import Config

    return Config.from_dict(meta["config"])


def build_model(cfg, classes, stage: str):
    """A fresh model of ``cfg.method`` in ``stage`` (the shapes to load into)."""
    from ..baselines import build_model as build
    from ..model import MODEL_STAGES
    if stage not in MODEL_STAGES:
        raise CheckpointError(f"checkpoint records model stage {stage!r}; a model is in one of "
                              f"{MODEL_STAGES}")
    model = build(cfg, tuple(classes))
    if stage == "divide":
        model.start_divide(reinit_experts=False)
    return model


def load(path, cfg=None, *, strict: bool = True, map_location: str = "cpu"):
    """The model stored at checkpoint ``path``, checksum-verified, in its saved stage.

    With ``cfg`` the architecture fields are compared first (a mismatch raises
    :class:`CheckpointError` with a diff) and the model is built from ``cfg``; without, from
    the checkpoint's own configuration. With ``strict`` (default) every tensor must fit.
    A path ending in ``.pt`` is read as a legacy state dict with ``weights_only=True``.
    """
    if str(path).endswith(".pt"):
        return _load_legacy(path, cfg, strict=strict)
    meta = read_meta(path)
    if cfg is not None:
        check_compatible(meta, cfg)
    tensors, meta = read_tensors(path, meta)
    use_cfg = cfg if cfg is not None else saved_config(meta)
    model = build_model(use_cfg, meta["classes"], meta["stage"] or "conquer")
    load_model_state(model, tensors, meta, source=f"checkpoint {files(path)[0]}", strict=strict)
    return model.to(map_location)


def _load_legacy(path, cfg, *, strict: bool = True):
    import torch

    if cfg is None:
        raise CheckpointError(f"legacy checkpoint {path} has no configuration record; pass cfg")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except pickle.UnpicklingError as e:
        first = str(e).strip().split(".")[0]  # torch's full text is a page long
        raise CheckpointError(
            f"refusing to load legacy checkpoint {path}: it holds objects other than tensors and "
            f"plain containers, which could run code when unpickled (torch.load weights_only=True "
            f"said: {first}). Re-save it as a state dict of tensors, or load it yourself only if "
            "you trust where it came from") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"legacy checkpoint {path} holds no state dict")
    classes = obj.get("classes") if isinstance(obj.get("classes"), (list, tuple)) else None
    if classes is None:
        raise CheckpointError(f"legacy checkpoint {path} does not record its class list")
    model = build_model(cfg, classes, obj.get("stage", "conquer"))
    model.load_state_dict(state, strict=strict)
    return model


__all__ = ["ARCH_FIELDS", "CheckpointError", "TENSOR_VALUES", "check_compatible", "config_diff",
           "exists", "files", "load", "read_meta", "read_tensors", "save"]
