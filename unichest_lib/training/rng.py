"""Random number generators: seeding, the per-epoch seed, and the states a checkpoint keeps.

* :func:`seed_everything` — the one seeding function (chapters call it through
  ``notebook.setup``, the training stages before building a model);
* :func:`epoch_seed` — the seed of one epoch's data order and augmentation, a pure function of
  (seed, stage, epoch), so a resumed run draws exactly what an uninterrupted one would;
* :func:`rng_state` / :func:`set_rng_state` — the global generators as tensors, saved in the
  "last" checkpoint and restored on resume.

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .keys import STAGES, check_stage


def seed_everything(seed: int, deterministic: bool | None = None) -> None:
    """Seed Python, NumPy and torch. ``deterministic`` True/False switches torch's
    deterministic algorithms on/off (training passes ``cfg.deterministic``); None (a
    chapter's set-up) leaves that switch as it is."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic is None:
        return
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def epoch_seed(seed: int, stage: str, epoch: int) -> int:
    """The seed of the data order and augmentation of one epoch of a ``stage`` run."""
    return (seed * 1_000_003 + STAGES.index(check_stage(stage)) * 10_007 + epoch) % 2**63


def rng_state() -> dict[str, torch.Tensor]:
    """The global RNG states (torch, CUDA, numpy, python) as tensors, for a checkpoint."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": torch.tensor([np_state[2], np_state[3], np_state[4]], dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([py_version, -1 if py_gauss is None else 1,
                                     0.0 if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    rest = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         int(rest[0]), int(rest[1]), float(rest[2])))
    version, has_gauss, gauss = state["python_meta"].tolist()
    random.setstate((int(version), tuple(int(v) for v in state["python"].tolist()),
                     gauss if has_gauss > 0 else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


__all__ = ["epoch_seed", "rng_state", "seed_everything", "set_rng_state"]
