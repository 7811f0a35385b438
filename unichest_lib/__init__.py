"""unichest_lib — a thin, tested re-implementation of UniChest (Dai et al., IEEE TMI 2024).

Modules, one concept each (see README, "Library map"):

- :mod:`unichest_lib.config`  named profiles and validated overrides
- :mod:`unichest_lib.labels`  the union label space and each source's label space

Heavy modules (torch, transformers) are imported lazily by the modules that need them, so
``import unichest_lib`` stays fast.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .config import Config, ConfigError, resolve

try:
    __version__ = _metadata.version("unichest-lib")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "resolve", "__version__"]
