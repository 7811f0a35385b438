"""Plotly figure builders used across the chapters, and the renderer that keeps them offline.

Every builder takes plain arrays or a tidy :class:`pandas.DataFrame` and returns a
:class:`plotly.graph_objects.Figure`; nothing here trains or evaluates. The figures of the
paper they stand for:

==========================  =====================================================
builder                     shows
==========================  =====================================================
:func:`image_grid`          example radiographs of each source
:func:`class_distribution`  per-source class prevalence (paper Fig. 1, left)
:func:`embedding_scatter`   t-SNE / UMAP of representations by source (Fig. 1, right)
:func:`line_chart`          lines of a value against a dial (separability, validation AUC)
:func:`loss_curves`         each named ``*_loss`` term of a training history
:func:`gate_heatmap`        mean gate weights ω per source and expert (Divide stage)
:func:`results_bar`         one metric per class and model from a tidy result table
:func:`results_radar`       the same as a radar chart (paper Figs. 4-6)
:func:`class_dots`          per-class AUC of several models with 95 % intervals, as dots
                            (paper Figs. 4-6 without the radar)
:func:`heatmap_overlay`     a grounding heatmap over its radiograph (paper Fig. 7), drawn
                            by :func:`overlay_rgb`, the library's one heat-map overlay
==========================  =====================================================

**Offline book.** Plotly's default renderer emits a MIME type that the book builder ignores,
and its HTML renderers fetch plotly.js and MathJax from CDNs. :func:`register_renderer`
installs a renderer named ``"unichest"`` that emits *both* plotly's JSON (interactive in
JupyterLab / VS Code) and a small HTML snippet without any JavaScript library embedded; the
book loads ``plotly.min.js`` once per page from its own static files (see ``_config.yml``).

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

RENDERER = "unichest"
#: One colour per source, stable across chapters (plotly's qualitative "Plotly" palette
#: followed by "D3" for the rest).
PALETTE = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
    "#FF97FF", "#FECB52", "#1F77B4", "#8C564B",
)
_LOSS_SUFFIX = "_loss"


# ---- the offline renderer ---------------------------------------------------------------
def to_book_html(fig: go.Figure) -> str:
    """The figure as an HTML ``<div>`` + ``<script>`` that needs a page-level plotly.js.

    No plotly.js, no MathJax and no CDN link are embedded (``include_plotlyjs=False``)."""
    return pio.to_html(
        fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
        config={"displaylogo": False, "responsive": True},
    )


class _BookRenderer(pio.base_renderers.MimetypeRenderer):
    """JSON for live Jupyter front-ends + library-free HTML for the built book."""

    def to_mimebundle(self, fig_dict):
        return {
            "application/vnd.plotly.v1+json": json.loads(
                pio.to_json(fig_dict, validate=False, remove_uids=False)),
            "text/html": to_book_html(go.Figure(fig_dict)),
        }


def register_renderer(make_default: bool = True) -> str:
    """Register the ``"unichest"`` renderer (and make it plotly's default); returns its name."""
    pio.renderers[RENDERER] = _BookRenderer()
    if make_default:
        pio.renderers.default = RENDERER
    return RENDERER


# ---- helpers ----------------------------------------------------------------------------
def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _png_uri(rgb: np.ndarray) -> str:
    """A (H, W) grey or (H, W, 3) uint8 array as a PNG data URI (compact in the HTML)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Grey image in 0..1 (float) or 0..255 (uint8), shape (H, W) or (1, H, W) -> uint8 (H, W)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"image must have shape (H, W) or (1, H, W), got {a.shape}")
    if a.dtype == np.uint8:
        return a
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _require_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the DataFrame lacks column(s) {missing}; it has {list(df.columns)}")


# ---- data -------------------------------------------------------------------------------
def image_grid(images: Mapping[str, Sequence[np.ndarray]],
               captions: Mapping[str, Sequence[str]] | None = None, *,
               tile_px: int = 150) -> go.Figure:
    """One row per source, one radiograph per column (images as compact PNG tiles).

    ``images[source]`` is a sequence of (H, W) or (1, H, W) arrays in 0..1 or uint8;
    ``captions[source]`` optional hover texts (e.g. the positive labels)."""
    if not images:
        raise ValueError("image_grid: `images` is empty; give at least one source")
    rows, cols = len(images), max(len(v) for v in images.values())
    if cols == 0:
        raise ValueError("image_grid: every source has zero images")
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.005, vertical_spacing=0.02,
                        row_titles=list(images))
    for r, (source, imgs) in enumerate(images.items(), start=1):
        texts = list((captions or {}).get(source, [""] * len(imgs)))
        for c, img in enumerate(imgs, start=1):
            tile = _to_uint8(img)
            fig.add_trace(go.Image(source=_png_uri(np.stack([tile] * 3, -1)),
                                   name=source, hovertemplate=f"{source}<br>{texts[c - 1] if c - 1 < len(texts) else ''}<extra></extra>"),
                          row=r, col=c)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=rows * tile_px + 40, width=cols * tile_px + 120,
                      margin=dict(l=10, r=90, t=30, b=10))
    return fig


def source_examples(datasets: Mapping[str, object], n: int = 4
                    ) -> tuple[dict[str, list], dict[str, list[str]]]:
    """The first ``n`` images of each dataset and their observed positive labels, ready for
    :func:`image_grid` (``datasets`` maps a name to a ``MultiSourceDataset``)."""
    from ..data.samples import labels_to_text

    images, captions = {}, {}
    for name, ds in datasets.items():
        items = [ds[i] for i in range(min(n, len(ds)))]
        images[name] = [it["image"].numpy() for it in items]
        captions[name] = [labels_to_text(it["labels"].numpy(), it["mask"].numpy(), ds.classes)
                          for it in items]
    return images, captions


def class_distribution(prevalence: pd.DataFrame, *, value: str = "prevalence",
                       title: str = "Class prevalence per source") -> go.Figure:
    """Grouped bars: for each class, the fraction of each source's images that are positive
    (paper Fig. 1, left). ``prevalence`` has columns ``source``, ``class`` and ``value``;
    a class a source does not annotate is absent or NaN and shows as a gap, not as zero."""
    _require_columns(prevalence, ["source", "class", value], "class_distribution")
    sources = list(dict.fromkeys(prevalence["source"]))
    classes = list(dict.fromkeys(prevalence["class"]))
    colors = _colors(sources)
    fig = go.Figure()
    for s in sources:
        d = prevalence[prevalence["source"] == s].set_index("class")[value].reindex(classes)
        fig.add_trace(go.Bar(x=classes, y=d.to_numpy(dtype=float), name=s, marker_color=colors[s],
                             hovertemplate="%{x}<br>" + s + ": %{y:.1%}<extra></extra>"))
    fig.update_layout(barmode="group", title=title, yaxis_tickformat=".0%",
                      yaxis_title="positive fraction", xaxis_tickangle=-45, height=460,
                      legend_title_text="source")
    return fig


# ---- representations -------------------------------------------------------------------
def embedding_scatter(coords: np.ndarray, groups: Sequence[str], *, title: str = "",
                      hover: Sequence[str] | None = None) -> go.Figure:
    """A 2-D scatter of ``coords`` (N, 2), one trace (colour) per group (e.g. source)."""
    coords = np.asarray(coords)
    groups = np.asarray(groups).astype(str)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"embedding_scatter: coords must have shape (N, 2), got {coords.shape}")
    if len(groups) != len(coords):
        raise ValueError(f"embedding_scatter: {len(groups)} groups for {len(coords)} points")
    names = list(dict.fromkeys(groups))
    colors = _colors(names)
    fig = go.Figure()
    for g in names:
        sel = groups == g
        fig.add_trace(go.Scattergl(
            x=coords[sel, 0], y=coords[sel, 1], mode="markers", name=g,
            marker=dict(size=5, color=colors[g], opacity=0.75),
            text=None if hover is None else list(np.asarray(hover)[sel]),
            hovertemplate=g + "%{text}<extra></extra>" if hover is not None else g + "<extra></extra>",
        ))
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x", scaleratio=1)
    fig.update_layout(title=title, height=430, legend_title_text="source",
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def line_chart(df: pd.DataFrame, *, x: str = "heterogeneity", y: str = "value",
               color: str = "measure", title: str = "") -> go.Figure:
    """Lines of ``y`` against ``x``, one per ``color`` value (e.g. one per separability
    measure against heterogeneity, or the validation aAUC against the epoch)."""
    _require_columns(df, [x, y, color], "line_chart")
    fig = go.Figure()
    for i, (name, d) in enumerate(df.sort_values(x).groupby(color, sort=False)):
        fig.add_trace(go.Scatter(x=d[x], y=d[y], mode="lines+markers", name=str(name),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=380)
    ticks = sorted(df[x].unique())
    if len(ticks) <= 12:  # a few measured points (epochs, levels): tick exactly those
        fig.update_xaxes(tickvals=ticks)
    return fig


# ---- training --------------------------------------------------------------------------
def loss_curves(history: pd.DataFrame, *, x: str = "step") -> go.Figure:
    """Every ``*_loss`` column (and ``loss``) of a training history against ``x``.

    Rows of a Divide stage are drawn dashed so both stages share one figure."""
    terms = [c for c in history.columns if c.endswith(_LOSS_SUFFIX) or c == "loss"]
    if not terms:
        raise ValueError(f"loss_curves: no '*_loss' or 'loss' column in {list(history.columns)}")
    _require_columns(history, [x], "loss_curves")
    stages = list(dict.fromkeys(history["stage"])) if "stage" in history else [None]
    colors = _colors(terms)
    fig = go.Figure()
    for stage in stages:
        h = history if stage is None else history[history["stage"] == stage]
        for t in terms:
            if h[t].notna().any():
                total = t == "loss"  # thin and see-through: it nearly equals L_BCL, on top
                fig.add_trace(go.Scatter(
                    x=h[x], y=h[t], mode="lines", name=t if stage is None else f"{stage}: {t}",
                    opacity=0.6 if total else 1.0,
                    line=dict(color=colors[t], width=1 if total else 2,
                              dash="dash" if stage == "divide" else "solid")))
    fig.update_layout(xaxis_title=x, yaxis_title="loss", height=400, title="Training losses"
                      + (" (dashed: Divide)" if "divide" in stages and len(stages) > 1 else ""))
    values = history[terms].to_numpy(dtype=float)
    if np.nanmin(values) > 0:  # terms differ by orders of magnitude (L_BCL ~ log M, ASL ~ 0.01)
        fig.update_yaxes(type="log", dtick=1, title="loss (log scale)")  # ticks at decades
    return fig


# ---- the Divide stage ------------------------------------------------------------------
def gate_heatmap(gates: pd.DataFrame, *, title: str = "Mean gate weight ω per source") -> go.Figure:
    """Rows (sources) x columns (experts) of mean gate weights ω (Eq. 5), annotated; which
    expert each source uses. ``gates`` as :func:`unichest_lib.book.tables.mean_gate_by_source`."""
    if gates.empty:
        raise ValueError("gate_heatmap: `gates` is empty; it needs one row per source")
    z = gates.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in gates.columns], y=[str(i) for i in gates.index],
                               zmin=0, zmax=1, colorscale="Blues", text=np.round(z, 2),
                               texttemplate="%{text}", colorbar=dict(title="ω")))
    fig.update_layout(title=title, xaxis_title="expert query network", yaxis_title="source",
                      height=120 + 45 * len(gates), width=200 + 90 * gates.shape[1])
    fig.update_yaxes(autorange="reversed")
    return fig


def grid_heatmap(df: pd.DataFrame, *, x: str = "lam", y: str = "K", z: str = "val_aAUC",
                 title: str = "") -> go.Figure:
    """An annotated heatmap of ``z`` over the grid ``x`` × ``y`` (paper Fig. 8: λ × K)."""
    _require_columns(df, [x, y, z], "grid_heatmap")
    if df.empty:
        raise ValueError("grid_heatmap: `df` is empty; it needs one row per grid point")
    t = df.pivot_table(index=y, columns=x, values=z, aggfunc="mean").sort_index()
    v = t.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(z=v, x=[str(c) for c in t.columns], y=[str(i) for i in t.index],
                               colorscale="Viridis", text=np.round(v, 3),
                               texttemplate="%{text}", colorbar=dict(title=z)))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y,
                      height=160 + 60 * len(t), width=260 + 90 * t.shape[1])
    return fig


# ---- results ---------------------------------------------------------------------------
_TIDY = ("source", "class", "metric", "value", "model")


def _metric_table(results: pd.DataFrame, metric: str, x: str, color: str) -> pd.DataFrame:
    _require_columns(results, [x, color, "metric", "value"], "results figure")
    d = results[results["metric"] == metric]
    if d.empty:
        raise ValueError(f"no rows with metric == {metric!r}; metrics present: "
                         f"{sorted(results['metric'].unique())}")
    # mean over seeds (and anything else not on an axis); std for error bars
    return d.groupby([x, color], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()


def results_bar(results: pd.DataFrame, metric: str = "AUC", *, x: str = "class",
                color: str = "model", title: str | None = None) -> go.Figure:
    """Grouped bars of one ``metric`` from a tidy result table
    (columns source, class, metric, value, model, seed); seeds are averaged, their standard
    deviation drawn as error bars."""
    t = _metric_table(results, metric, x, color)
    colors = _colors(list(dict.fromkeys(t[color])))
    fig = go.Figure()
    for name, d in t.groupby(color, sort=False):
        err = d["std"].fillna(0.0).to_numpy() if (d["count"] > 1).any() else None
        fig.add_trace(go.Bar(x=d[x].astype(str), y=d["mean"], name=str(name),
                             marker_color=colors[name],
                             error_y=None if err is None else dict(type="data", array=err)))
    fig.update_layout(barmode="group", title=title or metric, yaxis_title=metric,
                      xaxis_tickangle=-45, height=430, legend_title_text=color)
    return fig


def interval_bars(df: pd.DataFrame, *, x: str = "source", color: str = "variant",
                  y: str = "mean", lo: str = "lo", hi: str = "hi", title: str = "",
                  yaxis: str = "aAUC", reference: float | None = None) -> go.Figure:
    """Grouped bars of ``y`` with 95 % interval whiskers [``lo``, ``hi``] (one bar per ``x``
    and ``color``), e.g. :func:`unichest_lib.evidence.variant_table`; ``reference`` draws a
    horizontal line (0 for differences, 0.5 for chance AUC)."""
    _require_columns(df, [x, color, y, lo, hi], "interval_bars")
    names = list(dict.fromkeys(df[color]))
    colors = _colors(names)
    fig = go.Figure()
    for name in names:
        d = df[df[color] == name]
        fig.add_trace(go.Bar(
            x=d[x].astype(str), y=d[y], name=str(name), marker_color=colors[name],
            error_y=dict(type="data", symmetric=False, array=d[hi] - d[y],
                         arrayminus=d[y] - d[lo], thickness=1.5, width=4)))
    if reference is not None:
        fig.add_hline(y=reference, line=dict(color="#555", width=1, dash="dot"))
    fig.update_layout(barmode="group", title=title, yaxis_title=yaxis + " (95 % interval)",
                      height=420, legend_title_text=color)
    finite = pd.concat([df[lo], df[hi]]).astype(float)
    finite = finite[np.isfinite(finite)]
    if len(finite) and reference is None:
        span = finite.max() - finite.min()
        fig.update_yaxes(range=[max(0.0, finite.min() - 0.15 * span - 0.02),
                                min(1.0, finite.max() + 0.1 * span + 0.02)])
    return fig


def interval_points(df: pd.DataFrame, *, y: str = "claim", x: str = "mean", lo: str = "lo",
                    hi: str = "hi", color: str = "verdict", title: str = "",
                    xaxis: str = "effect", reference: float = 0.0) -> go.Figure:
    """A forest plot: one row per ``y`` (e.g. claim), the point ``x`` with its interval."""
    _require_columns(df, [y, x, lo, hi, color], "interval_points")
    palette = {"holds": "#2a9d8f", "contradicted": "#e76f51", "inconclusive": "#8d99ae"}
    fig = go.Figure()
    for name in dict.fromkeys(df[color]):
        d = df[df[color] == name]
        fig.add_trace(go.Scatter(
            x=d[x], y=d[y], mode="markers", name=str(name),
            marker=dict(size=9, color=palette.get(str(name), PALETTE[0])),
            error_x=dict(type="data", symmetric=False, array=d[hi] - d[x],
                         arrayminus=d[x] - d[lo], thickness=1.5, width=5)))
    fig.add_vline(x=reference, line=dict(color="#555", width=1, dash="dot"))
    fig.update_layout(title=title, xaxis_title=xaxis + " (95 % interval)",
                      height=120 + 34 * len(df), margin=dict(l=10, r=10, t=50, b=40),
                      legend_title_text=color)
    fig.update_yaxes(autorange="reversed")
    return fig


def class_dots(df: pd.DataFrame, *, cls: str = "class", color: str = "variant",
               x: str = "mean", lo: str = "lo", hi: str = "hi", title: str = "",
               xaxis: str = "AUC", reference: float | None = 0.5,
               order: Sequence[str] | None = None) -> go.Figure:
    """Per-class scores as dots with 95 % interval bars (paper Figs. 4-6 without the radar):
    one row per ``cls`` value, one marker colour (and trace) per ``color`` value, set side by
    side within a class's row; e.g. :func:`unichest_lib.evidence.per_class.class_table`.
    ``order`` fixes the colours across figures (default: the table's order); ``reference``
    draws a vertical line (0.5: chance AUC)."""
    _require_columns(df, [cls, color, x, lo, hi], "class_dots")
    classes = list(dict.fromkeys(df[cls]))
    present = set(df[color])
    names = [n for n in (order or dict.fromkeys(df[color])) if n in present]
    colors = _colors(list(order) if order else names)
    row = {c: i for i, c in enumerate(classes)}
    step = 0.7 / max(1, len(names))
    fig = go.Figure()
    for k, name in enumerate(names):
        d = df[df[color] == name]
        off = (k - (len(names) - 1) / 2) * step
        fig.add_trace(go.Scatter(
            x=d[x], y=[row[c] + off for c in d[cls]], mode="markers", name=str(name),
            marker=dict(size=8, color=colors[name]), customdata=d[cls].astype(str),
            hovertemplate="%{customdata}: %{x:.3f}",
            error_x=dict(type="data", symmetric=False, array=d[hi] - d[x],
                         arrayminus=d[x] - d[lo], thickness=1.5, width=3)))
    if reference is not None:
        fig.add_vline(x=reference, line=dict(color="#555", width=1, dash="dot"))
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(classes))), ticktext=classes,
                     autorange="reversed")
    fig.update_layout(title=title, xaxis_title=f"{xaxis} (95 % interval)",
                      height=max(280, 90 + 34 * len(classes)), legend_title_text=color)
    if not classes:
        fig.add_annotation(text="no class with enough positives and negatives to show",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def results_radar(results: pd.DataFrame, metric: str = "AUC", *, theta: str = "class",
                  color: str = "model", title: str | None = None) -> go.Figure:
    """A radar chart of one ``metric``: one axis per ``theta`` value, one polygon per model."""
    t = _metric_table(results, metric, theta, color)
    colors = _colors(list(dict.fromkeys(t[color])))
    fig = go.Figure()
    for name, d in t.groupby(color, sort=False):
        th = list(d[theta].astype(str))
        r = list(d["mean"])
        fig.add_trace(go.Scatterpolar(r=r + r[:1], theta=th + th[:1], name=str(name),
                                      line=dict(color=colors[name]), fill="toself", opacity=0.6))
    # the radial axis (and its tick labels) lies halfway between the first two spokes, so its
    # numbers never sit on a class label
    n = max(t[theta].nunique(), 1)
    fig.update_layout(title=title or metric, height=480,
                      polar=dict(angularaxis=dict(rotation=0, direction="counterclockwise"),
                                 radialaxis=dict(range=[0, 1], angle=180 / n, tickangle=180 / n,
                                                 tickfont=dict(size=10))))
    return fig


# ---- grounding -------------------------------------------------------------------------
def _jet(x: np.ndarray) -> np.ndarray:
    """A jet-like blue-cyan-yellow-red colour map (peak stays bright red):
    (H, W) in 0..1 -> (H, W, 3) in 0..1."""
    r = np.clip(4 * x - 1.5, 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.stack([r, g, b], -1)


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap (any (h, w), min-max normalised and upsampled by nearest neighbour to
    the image size) over a grey image; returns uint8 (H, W, 3). The one heat-map overlay of
    the library (jet-like colours, :func:`_jet`)."""
    grey = _to_uint8(image).astype(np.float32) / 255.0
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim != 2:
        raise ValueError(f"heatmap must have shape (h, w), got {hm.shape}")
    H, W = grey.shape
    rows = np.minimum((np.arange(H) * hm.shape[0]) // H, hm.shape[0] - 1)
    cols = np.minimum((np.arange(W) * hm.shape[1]) // W, hm.shape[1] - 1)
    hm = hm[rows][:, cols]
    span = float(hm.max() - hm.min())
    hm = (hm - hm.min()) / span if span > 0 else np.zeros_like(hm)
    rgb = (1 - alpha) * grey[..., None] + alpha * _jet(hm)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, *, title: str = "",
                    box: Sequence[float] | None = None, point: Sequence[float] | None = None,
                    alpha: float = 0.45, size_px: int = 360) -> go.Figure:
    """A grounding heatmap over its radiograph (paper Fig. 7); optionally the ground-truth
    box ``(x0, y0, x1, y1)`` in pixels (green) and the heatmap's peak ``(x, y)`` (white cross)."""
    rgb = overlay_rgb(image, heatmap, alpha)
    fig = go.Figure(go.Image(source=_png_uri(rgb), hoverinfo="skip"))
    if box is not None and np.all(np.isfinite(box)):
        x0, y0, x1, y1 = map(float, box)
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color="#00ff66", width=2))
    if point is not None:
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", showlegend=False,
                                 marker=dict(symbol="x", size=12, color="white")))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, width=size_px, height=size_px + 40,
                      margin=dict(l=5, r=5, t=40 if title else 5, b=5))
    return fig


# ---- the method on one batch (chapters 02 and 03) ----------------------------------------
def label_matrix(labels, mask, classes: Sequence[str], rows: Sequence[str], *,
                 title: str = "Labels Y of the batch (grey: not observed by the source)") -> go.Figure:
    """The batch's label matrix: one row per sample (``rows``, e.g. its source), one column
    per class of the union space; 1 positive, 0 negative, and grey where the sample's source
    does not annotate the class (``mask`` False: neither positive nor negative)."""
    y = np.asarray(labels, dtype=float)
    m = np.asarray(mask, dtype=bool)
    if y.shape != m.shape or y.ndim != 2 or y.shape != (len(rows), len(classes)):
        raise ValueError(f"label_matrix: labels {y.shape} and mask {m.shape} must both be "
                         f"(samples, classes) = ({len(rows)}, {len(classes)})")
    z = np.where(m, y, np.nan)
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=[f"{i}: {r}" for i, r in enumerate(rows)],
                               zmin=0, zmax=1, colorscale=[[0, "#f7fbff"], [1, "#08519c"]],
                               showscale=False, hoverongaps=False, xgap=1, ygap=1,
                               hovertemplate="%{y}<br>%{x}: %{z}<extra></extra>"))
    fig.update_layout(title=title, plot_bgcolor="#bdbdbd", height=160 + 16 * len(rows),
                      width=max(520, 120 + 22 * len(classes)), margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-60, side="bottom")
    return fig


def loss_panels(history: pd.DataFrame, *, x: str = "step",
                chance: Mapping[str, float] | None = None,
                title: str = "Training losses, one panel per term") -> go.Figure:
    """One panel per loss term of a training history (``*_loss`` columns, then ``loss``, the
    sum), each on its own linear axis so that no term hides under another; ``chance`` maps a
    term to its chance value, drawn as a dashed line (L_BCL: 2 ln M)."""
    terms = [c for c in history.columns if c.endswith(_LOSS_SUFFIX) and history[c].notna().any()]
    terms += ["loss"] if "loss" in history and history["loss"].notna().any() else []
    if not terms:
        raise ValueError(f"loss_panels: no '*_loss' or 'loss' column in {list(history.columns)}")
    _require_columns(history, [x], "loss_panels")
    fig = make_subplots(rows=1, cols=len(terms), subplot_titles=terms, horizontal_spacing=0.08)
    colors = _colors(terms)
    for j, t in enumerate(terms, start=1):
        fig.add_trace(go.Scatter(x=history[x], y=history[t], mode="lines", name=t,
                                 line=dict(color=colors[t], width=1.5)), row=1, col=j)
        if chance and t in chance:
            fig.add_trace(go.Scatter(x=[history[x].min(), history[x].max()], y=[chance[t]] * 2,
                                     mode="lines", name=f"{t} at chance",
                                     line=dict(color="black", dash="dash", width=1)), row=1, col=j)
        fig.update_xaxes(title_text=x, row=1, col=j)
    fig.update_layout(title=title, height=340, width=max(480, 300 * len(terms)),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def schedule_curves(curves: pd.DataFrame, *, y: str = "val_all_aAUC",
                    title: str = "Validation aAUC per epoch, one line per schedule length"
                    ) -> go.Figure:
    """The schedule study's curves: for each schedule length (``epochs``), the mean over seeds
    of ``y`` at every epoch, with the range over seeds as a band."""
    _require_columns(curves, ["epochs", "seed", "epoch", y], "schedule_curves")
    lengths = sorted(curves["epochs"].unique())
    colors = _colors([str(e) for e in lengths])
    fig = go.Figure()
    for e in lengths:
        g = curves[curves["epochs"] == e].groupby("epoch")[y].agg(["mean", "min", "max"])
        c = colors[str(e)]
        fig.add_trace(go.Scatter(x=list(g.index) + list(g.index[::-1]),
                                 y=list(g["max"]) + list(g["min"][::-1]), fill="toself",
                                 fillcolor=c, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False))
        fig.add_trace(go.Scatter(x=g.index, y=g["mean"], mode="lines+markers",
                                 name=f"{e} epochs", line=dict(color=c, width=2)))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=f"{y} (mean over seeds)",
                      height=380, width=680, legend=dict(orientation="h", y=-0.2))
    return fig


def pair_matrix(matrix, labels: Sequence[str], *, title: str = "",
                colorscale: str = "Blues", zmin: float | None = None,
                zmax: float | None = None) -> go.Figure:
    """A small square matrix over the samples of a batch (e.g. the same-source positives of
    L_SCL, or the similarities s_ij), annotated with its values."""
    z = np.asarray(matrix, dtype=float)
    if z.ndim != 2 or z.shape[0] != z.shape[1] or z.shape[0] != len(labels):
        raise ValueError(f"pair_matrix: need a square ({len(labels)}, {len(labels)}) matrix, "
                         f"got {z.shape}")
    names = [f"{i}: {n}" for i, n in enumerate(labels)]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale=colorscale, zmin=zmin, zmax=zmax,
                               text=np.round(z, 2), texttemplate="%{text}" if len(z) <= 16 else "",
                               showscale=False, xgap=1, ygap=1))
    fig.update_layout(title=title, height=220 + 22 * len(z), width=300 + 22 * len(z),
                      margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-60)
    return fig


__all__ = [
    "PALETTE", "RENDERER", "class_distribution", "class_dots", "embedding_scatter", "gate_heatmap", "heatmap_overlay",
    "grid_heatmap", "image_grid", "loss_curves", "source_examples", "overlay_rgb", "register_renderer", "results_bar",
    "interval_bars", "interval_points", "label_matrix", "line_chart", "loss_panels", "pair_matrix",
    "results_radar", "schedule_curves", "to_book_html",
]
