"""unichest_lib — a thin, tested re-implementation of UniChest (Dai et al., IEEE TMI 2024).

The package mirrors the pipeline (see ``book/developers.md``):

- :mod:`unichest_lib.config`      named profiles, overrides by name, all parameter validation
- :mod:`unichest_lib.data`        label spaces, the sample contract, the embedded and real worlds
- :mod:`unichest_lib.model`       encoders, query networks, the MoE-QN, running a model
- :mod:`unichest_lib.training`    losses, trainer, the two stages, checkpoints, the artifact store
- :mod:`unichest_lib.evaluation`  metrics, statistics, classification, grounding, transfer, cost
- :mod:`unichest_lib.evidence`    the named runs and controls, the claims and their ledger
- :mod:`unichest_lib.book`        what only the chapters use: set-up, tables, figures, widgets
- :mod:`unichest_lib.fileio`, :mod:`unichest_lib.hardware`, :mod:`unichest_lib.cli`

Heavy modules (torch, transformers) are imported only by the modules that need them, so
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
