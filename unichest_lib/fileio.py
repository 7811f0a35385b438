"""Atomic file writes and checksums: the one implementation every module writes files with.

A reader never sees half a file: :func:`atomic_write` writes into a temporary file in the
target's folder (``.<name>.<random>.tmp``) and moves it into place with ``os.replace``; on any
failure the temporary file is removed and the old file, if any, is left as it was.
Checkpoints, the artifact store, cached tables and predictions, the embedded world's pixel
cache, its priors and data cards, and the book's generated pages all write through it.

:func:`sha256` is the checksum checkpoints record and the store verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

#: What :func:`atomic_write` writes: bytes, text (UTF-8), or a function that writes into
#: the open binary file.
Content = Union[bytes, str, Callable[[IO[bytes]], Any]]


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write(path: str | os.PathLike, content: Content, *, fsync: bool = False) -> Path:
    """Write ``content`` to ``path`` atomically (creating its folder); returns the path.

    ``fsync`` flushes the data to the disk before the rename (checkpoints ask for it, so a
    power cut cannot leave a complete-looking but empty file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; a written file reads as any other
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = False,
                      **dumps) -> Path:
    """``obj`` as JSON (``indent=1, sort_keys=True`` unless ``dumps`` says otherwise)."""
    opts = {"indent": 1, "sort_keys": True, **dumps}
    return atomic_write(path, json.dumps(obj, **opts), fsync=fsync)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the file ``src`` to ``dst`` atomically."""
    def copy(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f)

    return atomic_write(dst, copy)


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest(obj: Any) -> str:
    """Hex sha256 of ``obj`` written as JSON with sorted keys (``str`` for what JSON cannot
    write): the one hash of a configuration or parameter record (store keys, evidence caches,
    the world cache)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


__all__ = ["Content", "atomic_copy", "atomic_write", "atomic_write_json", "digest", "sha256",
           "sha256_bytes"]
