"""The shape of the library (issue #17): no import cycle, the layering rules of
``book/developers.md``, modules of a readable size, and docstrings that point at chapters
that exist. The import graph is read with the standard library's ``ast`` (module-level and
function-level imports alike), so nothing is imported to check it.

The layers, bottom to top (a module may import its own layer and the layers below):

    foundation  config, fileio, hardware (and the package __init__)
    data        labels, samples, world/, real/, loaders, report filter, descriptions, cards
    model       encoders, query networks, UniChest, inference
    training | evaluation   side by side: training trains models (losses, augmentation,
                trainer, stages, checkpoints, store, ...); evaluation measures a model it is
                given (metrics, statistics, classification, grounding, transfer, cost, ...)
    evidence    the named runs and controls, claims, ledger (uses both)
    book        notebook set-up, tables, figures, explorer, bad-input page
    cli         the command line (``__main__`` too)

Training and evaluation do not import each other, with two named exceptions: training
imports ``evaluation.metrics`` (the validation aAUC), and evaluation imports
``training.losses`` (pure loss functions; fine-tuning's masked BCE). Nothing outside ``book``
imports ``book`` (so only the book support imports the figures), and the losses import no
data code.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "unichest_lib"

#: Each layer's rank: a module may import layers of a lower rank, and its own layer.
RANK = {"foundation": 0, "data": 1, "model": 2, "baselines": 2.5, "training": 3, "evaluation": 3, "evidence": 4,
        "book": 5, "cli": 6}
FOUNDATION = {"unichest_lib", "unichest_lib.config",
              "unichest_lib.fileio", "unichest_lib.hardware"}
#: The imports between training and evaluation (importer prefix, imported module).
ALLOWED_ACROSS = {("unichest_lib.training", "unichest_lib.evaluation.metrics"),
              ("unichest_lib.evaluation", "unichest_lib.training.losses")}
#: Modules longer than :data:`MAX_LINES`, each one concept that is genuinely long.
LONG_MODULES = {
    "unichest_lib/book/figures.py": "one short builder per figure of the paper, the shared "
                                    "palette and the offline renderer",
    "unichest_lib/evaluation/stats.py": "the statistics of one question (how sure is this "
                                        "difference?): bootstrap, DeLong, intervals, verdict",
    "unichest_lib/config.py": "the one record of every setting and all of its validation",
    "unichest_lib/training/trainer.py": "the Trainer class: steps, epochs, validation, "
                                        "checkpoints and resuming of one run",
}
MAX_LINES = 350


# ---- the import graph --------------------------------------------------------------------
def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package``."""
    out = {}
    for p in sorted(package.rglob("*.py")):
        rel = p.relative_to(package.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = p
    return out


def imports(package: Path) -> dict[str, set[str]]:
    """Module -> the library modules it imports anywhere in its file (``from . import x``
    counts as importing ``x``), without edges into the module's own parent packages."""
    mods = modules(package)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for t in names:
                if t in mods and t != m and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def unresolved(package: Path) -> list[str]:
    """``from <library module> import ...`` whose module is not a file of the library (an
    old flat name such as ``unichest_lib.store`` no longer exists)."""
    mods, bad = modules(package), []
    for m, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                    if node.module is None:  # from . import x: x is a module or a name
                        continue
                else:
                    target = node.module or ""
                if target.startswith("unichest_lib") and target not in mods:
                    bad.append(f"{m}: from {target} import ...")
            elif isinstance(node, ast.Import):
                bad += [f"{m}: import {a.name}" for a in node.names
                        if a.name.startswith("unichest_lib") and a.name not in mods]
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    part = module.split(".")[1]
    if part in ("cli", "__main__"):
        return "cli"
    if part not in RANK:
        raise AssertionError(f"{module} belongs to no layer; add it to the rules of "
                             "tests/test_structure.py and book/developers.md")
    return part


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layering rule, as ``importer -> imported (rule)``."""
    out = []
    for m, targets in sorted(edges.items()):
        for t in sorted(targets):
            lm, lt = layer(m), layer(t)
            upward = RANK[lt] > RANK[lm] or (RANK[lt] == RANK[lm] and lt != lm)
            if upward and not any(m.startswith(a) and t == b for a, b in ALLOWED_ACROSS):
                out.append(f"{m} -> {t} ({lm} may not import {lt})")
            if lt == "book" and lm != "book":
                out.append(f"{m} -> {t} (only the book support imports the book support)")
            if m == "unichest_lib.training.losses" and lt == "data":
                out.append(f"{m} -> {t} (the losses import no data code)")
    return out


# ---- the tests -----------------------------------------------------------------------------
def test_the_library_has_no_import_cycle_even_through_function_level_imports():
    found = cycles(imports(PACKAGE))
    assert not found, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_every_import_follows_the_layering_rules_of_the_developer_page():
    found = violations(imports(PACKAGE))
    assert not found, "imports that break book/developers.md:\n  " + "\n  ".join(found)


def test_the_library_imports_only_its_real_module_paths():
    found = unresolved(PACKAGE)
    assert not found, "old or missing module paths:\n  " + "\n  ".join(found)


def _copy(tmp_path: Path) -> Path:
    dest = tmp_path / "unichest_lib"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.parametrize("file, line, words", [
    ("evaluation/metrics.py", "from ..training import store", "evaluation may not import training"),
    ("book/figures.py", "from ..evidence import variants", None),  # book may import anything
    ("model/unichest.py", "from ..book import figures", "only the book support imports"),
    ("training/losses.py", "from ..data import labels", "the losses import no data code"),
    ("data/labels.py", "from ..model import UniChest", "data may not import model"),
    ("training/stages.py", "from ..evaluation import classification",
     "training may not import evaluation"),
])
def test_the_rules_catch_a_forbidden_import(tmp_path, file, line, words):
    copy = _copy(tmp_path)
    path = copy / file
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _added():\n    {line}\n")
    found = violations(imports(copy))
    if words is None:
        assert found == []
    else:
        assert any(words in v for v in found), found


def test_the_graph_catches_a_cycle_through_a_lazy_import(tmp_path):
    copy = _copy(tmp_path)
    path = copy / "training" / "keys.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _added():\n    from . import store\n")
    found = cycles(imports(copy))
    assert any({"unichest_lib.training.keys", "unichest_lib.training.store"} <= set(c)
               for c in found), found


def test_modules_stay_readable_in_size():
    long = {str(p.relative_to(ROOT)): sum(1 for _ in open(p, encoding="utf-8"))
            for p in PACKAGE.rglob("*.py")}
    over = {p: n for p, n in long.items() if n > MAX_LINES and p not in LONG_MODULES}
    assert over == {}, "split these along the paper's seams, or say why in LONG_MODULES"


def test_every_subpackage_says_what_it_holds_and_which_chapter_introduces_it():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 25, f"{init}: one paragraph on what it holds"
        if init.parent != PACKAGE:
            assert "notebooks/" in doc, f"{init}: name the chapter that introduces it"


INTRODUCED = re.compile(r"notebooks/([0-9]{2}_[a-z_]+)\.ipynb")


def test_every_chapter_a_docstring_names_exists():
    chapters = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    missing = []
    for path in PACKAGE.rglob("*.py"):
        for name in INTRODUCED.findall(path.read_text(encoding="utf-8")):
            if name not in chapters:
                missing.append(f"{path.relative_to(ROOT)}: notebooks/{name}.ipynb")
    assert missing == []


def test_the_flat_module_names_of_the_first_versions_are_gone():
    """The shim that kept them importing is retired: one name per module."""
    import importlib

    import pytest

    for old in ("unichest_lib.store", "unichest_lib.world", "unichest_lib.cards"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


# ---- the evidence's public names -------------------------------------------------------------
#: ``evidence.<name>`` in a chapter (a dotted path such as ``unichest_lib.evidence.dials.x``
#: names a module, not the package's API, and is not matched).
EVIDENCE_NAME = re.compile(r"(?<![\w.])evidence\.([A-Za-z_]\w*)")
#: ``from unichest_lib.evidence import ...`` (or ``from ..evidence import ...``): the names after
#: ``import``, in parentheses or up to the end of the line.
EVIDENCE_IMPORT = re.compile(r"from (?:unichest_lib\.|\.\.)evidence import (?:\(([^)]*)\)|([^\n]*))")
#: At most this many names in ``unichest_lib.evidence.__all__`` (issue #30: a thin core).
MAX_EVIDENCE_NAMES = 22


def evidence_api(package: Path) -> tuple[list[str], set[str]]:
    """(``__all__`` of ``<package>/evidence/__init__.py``, the names that file imports), read
    with ``ast``."""
    tree = ast.parse((package / "evidence" / "__init__.py").read_text(encoding="utf-8"))
    public, bound = None, set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            public = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.ImportFrom):
            bound |= {a.asname or a.name for a in node.names}
    assert public is not None, "unichest_lib/evidence/__init__.py has no __all__"
    return public, bound


def evidence_names(text: str) -> set[str]:
    """The names of ``unichest_lib.evidence`` that ``text`` uses: ``evidence.<name>`` and
    the names of a ``from ... evidence import``."""
    names = set(EVIDENCE_NAME.findall(text))
    for inside, line in EVIDENCE_IMPORT.findall(text):
        names |= {part.split()[0] for part in (inside or line).replace("\n", " ").split(",")
                  if part.strip() and not part.strip().startswith("#")}
    return names


def chapter_texts() -> dict[Path, str]:
    """Every cell of every chapter (``notebooks/*.ipynb``), the book's pages and scripts
    (``book/*.md``, ``book/*.py``) and the book support (``unichest_lib/book/*.py``)."""
    out = {}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        out[nb] = "\n".join("".join(c["source"]) for c in cells)
    for path in [*sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "book").glob("*.py")),
                 *sorted((PACKAGE / "book").glob("*.py"))]:
        out[path] = path.read_text(encoding="utf-8")
    return out


def test_evidence_exports_a_small_api_that_holds_every_name_the_chapters_use():
    public, bound = evidence_api(PACKAGE)
    assert len(public) <= MAX_EVIDENCE_NAMES, (
        f"unichest_lib.evidence exports {len(public)} names: consolidate them into what a "
        "study returns, or move presentation to unichest_lib.book")
    assert len(set(public)) == len(public) and set(public) <= bound, "export what is imported"
    outside = [f"{path.relative_to(ROOT)}: evidence.{name}"
               for path, text in chapter_texts().items()
               for name in sorted(evidence_names(text)) if name not in public]
    assert outside == [], ("chapters use names that unichest_lib.evidence does not export; "
                           "add them to its __all__ or import them from their module:\n  "
                           + "\n  ".join(outside))


def test_the_evidence_name_check_sees_uses_and_imports_but_not_module_paths():
    text = ("t = evidence.variant_table(cfg)\nw = evidence.with_intervals(t)\n"
            "x = unichest_lib.evidence.measures.patient_weights\n"
            "from unichest_lib.evidence import paper_tables\nimport pandas as pd\n"
            "from ..evidence import (plan,\n    SEEDS as S)\n"
            "from ..evidence.claims import zero_shot_sources\n")
    assert evidence_names(text) == {"variant_table", "with_intervals", "paper_tables", "plan",
                                    "SEEDS"}
