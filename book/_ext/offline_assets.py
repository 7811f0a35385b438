"""Sphinx extension: make the built book work with no network.

* copies ``plotly.min.js`` from the *installed* plotly package into ``_static/`` (so the
  JavaScript always matches the Python package that drew the figures; ``_config.yml`` loads
  it on every page through ``html_js_files``);
* after the build, warns about any page that still loads a script from another host.

MathJax, require.js and the ipywidgets HTML manager are vendored in ``book/_vendor/``
(see its README); ``_config.yml`` points Sphinx and myst-nb at them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)
_REMOTE_SCRIPT = re.compile(r"<script[^>]+src=[\"'](https?:)?//", re.IGNORECASE)


def plotly_js_path() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall plotly")
    return path


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".tmp")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def remote_scripts(outdir: Path) -> dict[str, int]:
    """Pages of a built book that load a script from another host, with a count each."""
    hits = {}
    for page in Path(outdir).rglob("*.html"):
        n = len(_REMOTE_SCRIPT.findall(page.read_text(encoding="utf-8", errors="replace")))
        if n:
            hits[str(page.relative_to(outdir))] = n
    return hits


def _finish(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    _copy_atomic(plotly_js_path(), Path(app.outdir) / "_static" / "plotly.min.js")
    for page, n in remote_scripts(Path(app.outdir)).items():
        logger.warning(f"offline book: {page} loads {n} script(s) from another host")


def setup(app):
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
