"""The artifact store, the one orchestrator: where every trained checkpoint lives, and what
trains it when it is missing.

Every chapter (through :mod:`unichest_lib.evidence`) and the command line ask the store for
the Conquer, Divide or continued checkpoint of a configuration and get a path, training first
(with a progress bar) when none exists yet; a Divide or continued run asks the store for its
Conquer checkpoint the same way. The training stages themselves (:mod:`.stages`) only ever
write where they are told. Artifacts are filed under the keys of :mod:`.keys` (re-exported
here), so changing ``K`` reuses the Conquer checkpoint while changing ``image_size`` retrains
both.

Layout under ``<cfg.cache_dir>/artifacts``::

    conquer-<key16>/checkpoint.safetensors, checkpoint.json   the best checkpoint
    conquer-<key16>/manifest.json                              key, config, sha256 (last)
    conquer-<key16>/run/                                       the training run (last/best);
                                                               once published, only last.json
    conquer-<key16>/.lock                                      held while training

A truncated or tampered file fails its checksum and is rebuilt; an interrupted build resumes
from its run's last checkpoint. Once an artifact is published its run keeps only the record
of its last checkpoint (the training history), not the weights and optimiser state, which
would triple the store's size on disk. Under ``torchrun`` every rank calls the store: rank 0 holds
the lock, cleans up and publishes, and all ranks train together.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import warnings

from ..config import Config
from ..hardware import effective_precision
from ..fileio import atomic_copy, atomic_write_json, sha256
from . import checkpoints
from .keys import (DIVIDE_ONLY, NOT_UPSTREAM, STAGES, conquer_fields, conquer_key, continued_key,
                   divide_key, key)


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
            and sha256(tensor_file) == m.get("sha256"))


def manifest(cfg: Config, stage: str) -> dict:
    """The manifest of a valid ``stage`` artifact (key, config, sha256, best_metric)."""
    return json.loads((artifact_dir(cfg, stage) / "manifest.json").read_text())


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
        atomic_copy(src, dst)
    meta = checkpoints.read_meta(dest)
    atomic_write_json(folder / "manifest.json", {
        "stage": stage, "key": key(cfg, stage), "config": cfg.to_dict(),
        "precision": effective_precision(cfg.amp, cfg.device),
        "sha256": meta["sha256"], "best_metric": meta["extra"].get("best_metric"),
    }, fsync=True)
    return dest


def _slim(run_dir: pathlib.Path) -> None:
    """Drop a published run's tensors (its best checkpoint is the artifact's copy; its last
    one only served resuming), keeping ``last.json``, whose record holds the history."""
    for name in ("best", "last"):
        tensor_file, json_file = checkpoints.files(run_dir / name)
        tensor_file.unlink(missing_ok=True)
        if name == "best":
            json_file.unlink(missing_ok=True)


def _build(cfg: Config, stage: str, progress: bool) -> pathlib.Path:
    """Train the ``stage`` run of ``cfg`` into its run folder (resuming an interrupted one)
    from the store's own Conquer checkpoint, and publish its best checkpoint."""
    from . import distributed, stages

    run_dir = artifact_dir(cfg, stage) / "run"
    resume = run_dir.exists()  # an interrupted earlier build: continue it
    kw = dict(progress=progress, resume=resume)
    if stage == "conquer":
        result = stages.conquer(cfg, run_dir, **kw)
    elif stage == "continued":
        result = stages.continue_conquer(cfg, conquer_checkpoint(cfg, progress=progress),
                                         run_dir, **kw)
    else:
        result = stages.divide(cfg, conquer_checkpoint(cfg, progress=progress), run_dir, **kw)
    if distributed.is_main():
        _publish(cfg, stage, result.checkpoint)
        _slim(run_dir)
    distributed.barrier()
    return _checkpoint_path(cfg, stage)


def stage_checkpoint(cfg: Config, stage: str, *, progress: bool = True) -> pathlib.Path:
    """Path of the best ``stage`` checkpoint for ``cfg``, training it first if missing.

    A damaged artifact (failed checksum, missing manifest) is reported and rebuilt.
    """
    from . import distributed

    folder = artifact_dir(cfg, stage)
    if is_valid(cfg, stage):
        return _checkpoint_path(cfg, stage)
    main = distributed.is_main()
    with _lock(folder) if main else contextlib.nullcontext():
        distributed.barrier()  # under torchrun: rank 0 holds the lock before anyone looks
        if is_valid(cfg, stage):  # another process finished it while we waited
            return _checkpoint_path(cfg, stage)
        if main and (folder / "manifest.json").exists():
            warnings.warn(f"artifact {folder} failed its checksum or manifest check; rebuilding it",
                          RuntimeWarning, stacklevel=2)
            (folder / "manifest.json").unlink()
            shutil.rmtree(folder / "run", ignore_errors=True)
        distributed.barrier()
        return _build(cfg, stage, progress)


def conquer_checkpoint(cfg: Config, *, progress: bool = True) -> pathlib.Path:
    """The best Conquer checkpoint of ``cfg`` (trained on first use). Eq. 4."""
    return stage_checkpoint(cfg, "conquer", progress=progress)


def divide_checkpoint(cfg: Config, *, progress: bool = True) -> pathlib.Path:
    """The best Divide checkpoint of ``cfg`` (trains Conquer and Divide on first use). Eq. 7."""
    return stage_checkpoint(cfg, "divide", progress=progress)


def continued_checkpoint(cfg: Config, *, progress: bool = True) -> pathlib.Path:
    """The compute-matched control: Conquer trained ``divide_epochs`` more epochs with Eq. 4."""
    return stage_checkpoint(cfg, "continued", progress=progress)


def load_model(cfg: Config, stage: str = "divide", *, progress: bool = True):
    """The trained UniChest model of ``stage`` for ``cfg``, in eval mode.

    One Conquer artifact serves every value of the Divide-only fields (K, lam, ...), so a
    Conquer (or continued) model is built from the checkpoint's own configuration, not from
    ``cfg``; a Divide model from ``cfg``, whose architecture fields are checked first.
    """
    path = stage_checkpoint(cfg, stage, progress=progress)
    model = checkpoints.load(path, cfg if stage == "divide" else None)
    return model.eval()


def history(cfg: Config, stage: str, *, progress: bool = True):
    """The training history of the ``stage`` artifact of ``cfg`` (one row per optimiser
    step, one validation row per epoch), read from its run's last record; trains the
    artifact first if it is missing."""
    import pandas as pd

    from .losses import current_term_names

    stage_checkpoint(cfg, stage, progress=progress)
    record = checkpoints.files(artifact_dir(cfg, stage) / "run" / "last")[1]
    if not record.exists():
        raise FileNotFoundError(f"no training run for the {stage} artifact of this configuration "
                                f"at {record}; delete {record.parent.parent} to retrain it")
    try:
        rows = json.loads(record.read_text())["extra"]["history"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as e:
        raise checkpoints.CheckpointError(f"training record {record} is damaged ({e!r}); delete "
                                          f"{record.parent.parent} to retrain it") from None
    return current_term_names(pd.DataFrame(rows))


def fit(trainer, model, train_set, val_set):
    """Serve :meth:`Trainer.fit <unichest_lib.training.trainer.Trainer.fit>` without an
    ``out_dir``: the trainer's configuration and stage name a run of the store, which is
    trained once (:func:`stage_checkpoint`) and then served: its best weights are loaded into
    the trainer's model and its history returned (``served`` says whether it was already
    there).
    Refused unless the model and the training data are the ones the stored run starts from
    (:func:`~unichest_lib.training.stages.initial_model`), so a reader's changed model is
    never silently replaced by stored weights."""
    from . import losses, stages
    from .features import dataset_digest
    from .trainer import TrainResult, same_state

    cfg, stage = trainer.cfg.validate(), trainer.stage
    if cfg.method == "unichest" and trainer.loss_fn not in (losses.conquer_loss, losses.divide_loss):
        raise ValueError("a custom loss_fn is not the stored run's loss: pass out_dir to "
                         "train with it")
    stored_train = stages.training_data(cfg)[0]
    if dataset_digest(train_set, cfg) != dataset_digest(stored_train, cfg):
        raise ValueError("train_set is not the training split of this configuration "
                         "(make_dataset(cfg, cfg.sources, 'train')); pass out_dir to train "
                         "on other data")
    served = is_valid(cfg, stage)
    upstream = None if stage == "conquer" else conquer_checkpoint(cfg, progress=trainer.progress)
    if not same_state(stages.initial_model(cfg, stage, train_set.classes, upstream), model):
        raise ValueError(
            f"this model is not the one the stored {stage} run of this configuration starts "
            "from (it was changed, trained or built differently): fit a fresh model "
            "(training.stages.initial_model) or pass out_dir to train this one")
    path = stage_checkpoint(cfg, stage, progress=trainer.progress)
    tensors, meta = checkpoints.read_tensors(path)
    # One Conquer artifact serves every K: the parts a Conquer-stage model does not train
    # (experts, Φ1, Φ2: inactive until start_divide) may have another shape in it and are not
    # its result, so the model keeps its own (init_from_conquer leaves them out the same way).
    skip = [] if stage == "divide" else [
        n for n, p in model.named_parameters() if not p.requires_grad]
    checkpoints.load_model_state(model, tensors, meta, skip=skip,
                                 source=f"stored run {path}")
    extra = meta["extra"]
    return TrainResult(model=model, history=history(cfg, stage), checkpoint=path,
                       best_metric=extra["best_metric"], last_checkpoint=path,
                       out_dir=path.parent, served=served)


def _register() -> None:
    from .trainer import serve_runs_with

    serve_runs_with(fit)


_register()

__all__ = ["DIVIDE_ONLY", "NOT_UPSTREAM", "STAGES", "artifact_dir",
           "conquer_checkpoint", "conquer_fields", "conquer_key", "continued_checkpoint",
           "continued_key", "divide_checkpoint", "divide_key", "fit", "history", "is_valid", "key",
           "load_model", "manifest", "root", "stage_checkpoint"]
