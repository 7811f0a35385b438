"""The artifact store: trained checkpoints keyed by the full upstream configuration.

Every notebook can run alone: it asks the store for the Conquer or Divide checkpoint of its
configuration and gets a path, training first (with a progress bar) when none exists yet.

The **Conquer key** hashes every :class:`~unichest_lib.config.Config` field that can change
the Conquer result — all of them except :data:`DIVIDE_ONLY` (fields read only by the Divide
stage) and :data:`NOT_UPSTREAM` (fields that change where or how fast, not what). The
**Divide key** hashes the Conquer key plus the Divide fields, so changing ``K`` reuses the
Conquer checkpoint while changing ``image_size`` retrains both.

Layout under ``<cfg.cache_dir>/artifacts``::

    conquer-<key16>/checkpoint.safetensors, checkpoint.json   the best checkpoint
    conquer-<key16>/manifest.json                              key, config, sha256 (last)
    conquer-<key16>/run/                                       the training run (last/best)
    conquer-<key16>/.lock                                      held while training

A truncated or tampered file fails its checksum and is rebuilt. Introduced in
``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import warnings

from . import checkpoints
from .config import Config

#: Fields read only by the Divide stage: they do not change the Conquer checkpoint.
DIVIDE_ONLY = ("K", "lam", "scl_dim", "tau_scl", "scl_variant", "combine", "divide_epochs",
               "divide_on_features", "scl_weight", "gate")
#: Fields that change where or how fast things run, or which evaluation is done, but not
#: the trained weights (``num_workers`` is safe because augmentation runs in the trainer).
NOT_UPSTREAM = ("profile", "cache_dir", "num_workers", "device", "eval_batch_size",
                "nan_policy", "downstream", "n_downstream")

#: ``continued``: the compute-matched control (Conquer trained for ``divide_epochs`` more).
STAGES = ("conquer", "divide", "continued")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def conquer_fields() -> tuple[str, ...]:
    """The Config fields the Conquer key hashes (everything upstream of Conquer)."""
    skip = set(DIVIDE_ONLY) | set(NOT_UPSTREAM)
    return tuple(f.name for f in dataclasses.fields(Config) if f.name not in skip)


def conquer_key(cfg: Config) -> str:
    """sha256 of the library version and every field in :func:`conquer_fields`."""
    from . import __version__

    d = cfg.to_dict()
    return _digest({"stage": "conquer", "version": __version__,
                    "fields": {f: d[f] for f in conquer_fields()}})


def divide_key(cfg: Config) -> str:
    """sha256 of the Conquer key and every field in :data:`DIVIDE_ONLY`."""
    d = cfg.to_dict()
    return _digest({"stage": "divide", "conquer": conquer_key(cfg),
                    "fields": {f: d[f] for f in DIVIDE_ONLY}})


def continued_key(cfg: Config) -> str:
    """sha256 of the Conquer key and ``divide_epochs`` (the length of the continued run)."""
    return _digest({"stage": "continued", "conquer": conquer_key(cfg),
                    "divide_epochs": cfg.divide_epochs})


def key(cfg: Config, stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not valid; choose one of {STAGES}")
    return {"conquer": conquer_key, "divide": divide_key, "continued": continued_key}[stage](cfg)


def root(cfg: Config) -> pathlib.Path:
    return pathlib.Path(cfg.cache_dir) / "artifacts"


def artifact_dir(cfg: Config, stage: str) -> pathlib.Path:
    """Folder of the ``stage`` artifact of ``cfg``: ``<root>/<stage>-<key[:16]>``."""
    return root(cfg) / f"{stage}-{key(cfg, stage)[:16]}"


def _checkpoint_path(cfg: Config, stage: str) -> pathlib.Path:
    return artifact_dir(cfg, stage) / "checkpoint"


def is_valid(cfg: Config, stage: str) -> bool:
    """True when the ``stage`` artifact exists and its manifest, key and checksum agree."""
    folder = artifact_dir(cfg, stage)
    manifest = folder / "manifest.json"
    tensor_file, json_file = checkpoints.files(folder / "checkpoint")
    if not (manifest.exists() and tensor_file.exists() and json_file.exists()):
        return False
    try:
        m = json.loads(manifest.read_text())
        meta = checkpoints.read_meta(folder / "checkpoint")
    except (json.JSONDecodeError, UnicodeDecodeError, checkpoints.CheckpointError):
        return False
    return (m.get("key") == key(cfg, stage) and m.get("sha256") == meta.get("sha256")
            and checkpoints.sha256(tensor_file) == m.get("sha256"))


@contextlib.contextmanager
def _lock(folder: pathlib.Path):
    """An exclusive advisory lock on ``folder/.lock`` (blocks while another process trains)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _publish(cfg: Config, stage: str, best: pathlib.Path) -> pathlib.Path:
    """Copy run checkpoint ``best`` into the artifact folder and write the manifest last."""
    folder = artifact_dir(cfg, stage)
    dest = folder / "checkpoint"
    for src, dst in zip(checkpoints.files(best), checkpoints.files(dest)):
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    meta = checkpoints.read_meta(dest)
    checkpoints.atomic_write_json(folder / "manifest.json", {
        "stage": stage, "key": key(cfg, stage), "config": cfg.to_dict(),
        "sha256": meta["sha256"], "best_metric": meta["extra"].get("best_metric"),
    })
    return dest


def _build(cfg: Config, stage: str, progress: bool) -> pathlib.Path:
    from . import train

    folder = artifact_dir(cfg, stage)
    run_dir = folder / "run"
    resume = run_dir.exists()  # an interrupted earlier build: continue it
    if stage == "conquer":
        result = train.conquer(cfg, progress=progress, out_dir=run_dir, resume=resume)
    elif stage == "continued":
        result = train.continue_conquer(cfg, conquer_checkpoint=conquer_checkpoint(cfg, progress=progress),
                                        progress=progress, out_dir=run_dir, resume=resume)
    else:
        result = train.divide(cfg, conquer_checkpoint=conquer_checkpoint(cfg, progress=progress),
                              progress=progress, out_dir=run_dir, resume=resume)
    return _publish(cfg, stage, result.checkpoint)


def checkpoint(cfg: Config, stage: str, *, progress: bool = True) -> pathlib.Path:
    """Path of the best ``stage`` checkpoint for ``cfg``, training it first if missing.

    A damaged artifact (failed checksum, missing manifest) is reported and rebuilt.
    """
    folder = artifact_dir(cfg, stage)
    if is_valid(cfg, stage):
        return _checkpoint_path(cfg, stage)
    with _lock(folder):
        if is_valid(cfg, stage):  # another process finished it while we waited
            return _checkpoint_path(cfg, stage)
        if (folder / "manifest.json").exists():
            warnings.warn(f"artifact {folder} failed its checksum or manifest check; rebuilding it",
                          RuntimeWarning, stacklevel=2)
            (folder / "manifest.json").unlink()
            shutil.rmtree(folder / "run", ignore_errors=True)
        return _build(cfg, stage, progress)


def conquer_checkpoint(cfg: Config, *, progress: bool = True) -> pathlib.Path:
    """The best Conquer checkpoint of ``cfg`` (trained on first use). Eq. 4."""
    return checkpoint(cfg, "conquer", progress=progress)


def divide_checkpoint(cfg: Config, *, progress: bool = True) -> pathlib.Path:
    """The best Divide checkpoint of ``cfg`` (trains Conquer and Divide on first use). Eq. 7."""
    return checkpoint(cfg, "divide", progress=progress)


def continued_checkpoint(cfg: Config, *, progress: bool = True) -> pathlib.Path:
    """The compute-matched control: Conquer trained ``divide_epochs`` more epochs with Eq. 4."""
    return checkpoint(cfg, "continued", progress=progress)


def load_model(cfg: Config, stage: str = "divide", *, progress: bool = True):
    """The trained UniChest model of ``stage`` for ``cfg``, in eval mode.

    One Conquer artifact serves every value of the Divide-only fields (K, lam, ...), so a
    Conquer model is built from the checkpoint's own configuration, not from ``cfg``.
    """
    path = checkpoint(cfg, stage, progress=progress)
    model = checkpoints.load(path, cfg if stage == "divide" else None)
    return model.eval()


__all__ = ["DIVIDE_ONLY", "NOT_UPSTREAM", "artifact_dir", "checkpoint", "conquer_checkpoint",
           "conquer_fields", "conquer_key", "continued_checkpoint", "continued_key", "divide_checkpoint", "divide_key", "is_valid", "key",
           "load_model"]
