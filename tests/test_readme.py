"""The README stays short and its commands stay real: every ``make`` target, CLI verb and
option, papermill notebook and parameter it names exists, and every Python block runs its
imports. (The commands themselves run in CI: ``make test`` and the smoke book.)"""

from __future__ import annotations

import importlib.util
import re
import shlex

import nbformat

from helpers import ROOT
from unichest_lib import cli

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 125


def test_every_make_target_it_names_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    named = set(re.findall(r"`make ([a-z][\w-]*)", README))
    assert named and named <= targets, named - targets


def test_every_cli_line_parses_and_every_notebook_parameter_exists():
    lines = [ln.split("#")[0].strip() for b in _blocks("bash") for ln in b.splitlines()]
    checked = 0
    for ln in lines:
        words = shlex.split(ln) if ln else []
        if words[:3] == ["python", "-m", "unichest_lib"]:
            assert words[3] in cli.VERBS, ln
            args = cli.build_parser().parse_args(words[3:])  # exits on an unknown option
            if "--data" not in words:
                cli.parse(words[3:])  # every override is a valid configuration value
            assert args.verb == words[3]
            checked += 1
        elif words[:1] == ["papermill"]:
            nb = nbformat.read(ROOT / words[1], as_version=4)
            params = "\n".join(c.source for c in nb.cells
                               if "parameters" in c.get("metadata", {}).get("tags", []))
            for name in [words[i + 1] for i, w in enumerate(words) if w == "-p"]:
                assert re.search(rf"^{name}\s*=", params, flags=re.M), (ln, name)
            checked += 1
        elif words[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(words[2]) is not None, ln
    assert checked >= 2


def test_every_python_block_imports_what_it_uses():
    for block in _blocks("python"):
        imports = "\n".join(ln for ln in block.splitlines() if ln.startswith(("from ", "import ")))
        exec(compile(imports, "README.md", "exec"), {})
