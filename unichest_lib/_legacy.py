"""The flat module paths of the library before issue #17, kept working for existing code.

The modules moved into subpackages (:data:`MOVED`: old name -> new home). Instead of a shim
file per old module at the top of the package, one import hook answers for all of them:
``import unichest_lib.store``, ``from unichest_lib import figures`` and
``from unichest_lib.checkpoints import load`` give the *same module objects* as their new
homes (so patching one patches the other), submodules included
(``unichest_lib.world.sources``), and ``python -m unichest_lib.world cards`` or
``python -m unichest_lib.cards stats chexpert`` run the moved file under its real package.
Nothing inside the library uses these names (``tests/test_structure.py`` checks that);
chapters, tests and docs use the new ones.

Names *inside* some modules changed on purpose (issue #17: one home per utility, names that
explain themselves); the library's developer page lists them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

PACKAGE = __name__.rpartition(".")[0]

#: Old module (under the package) -> its new home.
MOVED = {
    "labels": "data.labels", "samples": "data.samples", "report_filter": "data.report_filter",
    "descriptions": "data.descriptions", "cards": "data.cards", "world": "data.world",
    "datasets": "data.real",
    "text": "model.text",
    "losses": "training.losses", "augment": "training.augment", "train": "training.stages",
    "checkpoints": "training.checkpoints", "store": "training.store",
    "distributed": "training.distributed", "features": "training.features",
    "metrics": "evaluation.metrics", "stats": "evaluation.stats",
    "evaluate": "evaluation.classification", "grounding": "evaluation.grounding",
    "finetune": "evaluation.finetune", "cost": "evaluation.cost",
    "heterogeneity": "evaluation.heterogeneity",
    "figures": "book.figures", "explorer": "book.explorer", "notebook": "book.notebook",
    "badinputs": "book.badinputs",
}


def new_name(fullname: str) -> str | None:
    """The new full name of an old full module name (None when it did not move)."""
    prefix = PACKAGE + "."
    if not fullname.startswith(prefix):
        return None
    head, _, rest = fullname[len(prefix):].partition(".")
    if head not in MOVED:
        return None
    return prefix + MOVED[head] + ("." + rest if rest else "")


class _AliasSpec(importlib.machinery.ModuleSpec):
    """A spec under the old name whose ``parent`` is the real module's: ``python -m`` runs the
    real code with its own package, so its relative imports work."""

    def __init__(self, name, loader, real):
        super().__init__(name, loader, origin=real.origin,
                         is_package=real.submodule_search_locations is not None)
        if real.submodule_search_locations is not None:
            self.submodule_search_locations = list(real.submodule_search_locations)
        self.real = real
        self.has_location = real.has_location

    @property
    def parent(self):
        return self.real.parent


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds old names; importing one returns the new module, ``get_code`` (what ``python -m``
    asks for) returns the new module's code."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        real = importlib.util.find_spec(new)
        return None if real is None else _AliasSpec(fullname, self, real)

    def create_module(self, spec):
        return importlib.import_module(spec.real.name)

    def exec_module(self, module):
        """Nothing to run: the new module is already imported."""

    def get_code(self, fullname):
        spec = self.find_spec(fullname)
        return spec.real.loader.get_code(spec.real.name)


def install() -> None:
    """Put the finder in front of ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


__all__ = ["MOVED", "install", "new_name"]
