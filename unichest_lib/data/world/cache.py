"""On-disk cache of rendered chunks, keyed by every parameter that changes pixels.

A chunk is a folder ``<cache_dir>/world/<source>-<key>/`` with one ``.npy`` file per array
and a ``meta.json`` holding each file's shape, dtype and SHA-256. Every file is written to a
temporary name and moved into place with ``os.replace`` (``meta.json`` last), so a reader sees
either a complete chunk or none. :func:`load` verifies shapes, dtypes and checksums and
returns ``None`` for a missing or corrupt chunk, which the caller then re-renders. Arrays are
loaded with ``allow_pickle=False`` and memory-mapped.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ...fileio import atomic_write, digest, sha256


def key(params: dict) -> str:
    """A short stable hash of a JSON-able parameter dict."""
    return digest(params)[:20]


def save(folder: Path, arrays: dict[str, np.ndarray], params: dict) -> None:
    """Write ``arrays`` into ``folder`` atomically, with checksums in ``meta.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"params": params, "arrays": {}}
    for name, arr in arrays.items():
        path = folder / f"{name}.npy"
        arr = np.ascontiguousarray(arr)
        atomic_write(path, lambda f, a=arr: np.save(f, a, allow_pickle=False))
        meta["arrays"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                                "sha256": sha256(path)}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str))


def load(folder: Path, expected: dict[str, tuple]) -> dict[str, np.ndarray] | None:
    """The arrays of a verified chunk, or ``None`` if missing or corrupt.

    ``expected`` maps each array name to ``(dtype, shape)`` where ``None`` entries in the
    shape match any length. A corrupt chunk is deleted so it is rebuilt cleanly.
    """
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        out = {}
        for name, (dtype, shape) in expected.items():
            info = meta["arrays"][name]
            path = folder / f"{name}.npy"
            if sha256(path) != info["sha256"]:
                raise ValueError(f"checksum mismatch for {path}")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if str(arr.dtype) != dtype or len(arr.shape) != len(shape) or any(
                    s is not None and s != a for s, a in zip(shape, arr.shape)):
                raise ValueError(f"{path} has {arr.dtype} {arr.shape}, expected {dtype} {shape}")
            out[name] = arr
        return out
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        shutil.rmtree(folder, ignore_errors=True)
        return None
