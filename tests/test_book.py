"""The book's table of contents, configuration and offline assets are consistent."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        for v in node.values():
            out += _toc_files(v)
    elif isinstance(node, list):
        for v in node:
            out += _toc_files(v)
    return out


def _extension(name: str):
    spec = importlib.util.spec_from_file_location(name, BOOK / "_ext" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _offline_assets():
    return _extension("offline_assets")


def test_card_pages_puts_every_card_under_its_own_heading():
    from types import SimpleNamespace

    from unichest_lib.data import cards

    ext = _extension("card_pages")
    deps = []
    app = SimpleNamespace(env=SimpleNamespace(note_dependency=deps.append))
    page = (BOOK / "data_cards.md").read_text()
    source = [page]
    ext._expand(app, "other_page", source)
    assert source == [page]  # other pages are left alone
    ext._expand(app, ext.PAGE, source)
    assert "data-cards:" not in source[0]
    table = cards.load_cards()
    headings = [line for line in source[0].splitlines() if line.startswith("### ")]
    assert len(headings) == len(table) >= 18
    real, embedded = source[0].split("## Real datasets")[1].split("## Embedded sources")
    for kind, part in (("real", real), ("embedded", embedded)):
        for _, card in table.loc[kind].iterrows():
            assert f"### {card['title']} (`{card.name}`)" in part, (kind, card.name)
    assert len(deps) == len(table) and all(d.endswith(".md") for d in deps)


def test_every_toc_entry_exists():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("parts", []))]
    for f in files:
        candidates = [BOOK / f"{f}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml lists {f!r}, which does not exist"
    assert (BOOK / "notebooks").resolve() == (ROOT / "notebooks").resolve()


def test_config_fails_on_broken_cells_and_serves_javascript_locally():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = cfg["sphinx"]["config"]
    assert sphinx["nb_execution_raise_on_error"] is True
    assert "_static" not in sphinx["html_static_path"]
    static = [BOOK / p for p in sphinx["html_static_path"]]
    local = [sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"]]
    for rel in local:
        assert "//" not in rel, f"{rel} is not a local path"
        assert any((s / rel).is_file() for s in static), f"{rel} is not in {static}"
    assert [e[0] for e in sphinx["html_js_files"]] == ["plotly.min.js"]
    assert _offline_assets().plotly_js_path().stat().st_size > 1_000_000


def test_remote_script_detector(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.example/x.js"></script>')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.html").write_text('<script src="../_static/x.js"></script>'
                                              '<a href="https://example.org">a link is fine</a>')
    assert _offline_assets().remote_scripts(tmp_path) == {"a.html": 1}


@pytest.mark.slow
def test_book_builds_offline_without_executing(tmp_path):
    """The whole book builds (notebooks not executed, for speed) and no page loads a
    script from another host; the real build (`make book`) executes every chapter."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = "off"
    cfg["sphinx"]["local_extensions"] = {"offline_assets": str(BOOK / "_ext"),
                                         "card_pages": str(BOOK / "_ext")}
    conf = tmp_path / "_config.yml"
    conf.write_text(yaml.safe_dump(cfg))
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    res = subprocess.run([jb, "build", str(BOOK), "--config", str(conf), "--path-output",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    assert (html / "_static" / "plotly.min.js").is_file()
    assert (html / "_static" / "mathjax" / "tex-chtml-full.js").is_file()
    assert (html / "appendix_paper_vs_code.html").is_file()
    cards_page = (html / "data_cards.html").read_text()
    assert "data-cards:" not in cards_page
    contents = cards_page[cards_page.index('class="bd-toc'):]  # the page's contents list
    assert "Embedded CheXpert-like source" in contents and "ChestX-ray14 (NIH)" in contents
    assert _offline_assets().remote_scripts(html) == {}
