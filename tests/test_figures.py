"""The figure builders return the traces a reader expects, and the book renderer stays offline."""

import base64
import io
import json

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from PIL import Image

from unichest_lib.book import figures


def _decode_png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_image_grid_has_one_tile_per_image_and_keeps_pixels():
    rng = np.random.default_rng(0)
    imgs = {"a": [rng.random((16, 16)) for _ in range(3)], "b": [rng.random((1, 16, 16))]}
    fig = figures.image_grid(imgs)
    assert [t.type for t in fig.data] == ["image"] * 4
    tile = _decode_png(fig.data[0].source)
    expected = (np.clip(imgs["a"][0], 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(tile[..., 0], expected)


def test_image_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        figures.image_grid({"a": [np.zeros((2, 3, 4))]})
    with pytest.raises(ValueError, match="empty"):
        figures.image_grid({})


def test_class_distribution_shows_unlabelled_classes_as_gaps_not_zero():
    df = pd.DataFrame({"source": ["s1", "s1", "s2"], "class": ["x", "y", "x"],
                       "prevalence": [0.1, 0.5, 0.3]})
    fig = figures.class_distribution(df)
    assert [t.name for t in fig.data] == ["s1", "s2"]
    s2 = fig.data[1]
    assert list(s2.x) == ["x", "y"]
    assert s2.y[0] == pytest.approx(0.3) and np.isnan(s2.y[1])


def test_embedding_scatter_one_trace_per_source_with_all_points():
    coords = np.arange(20, dtype=float).reshape(10, 2)
    groups = ["a"] * 3 + ["b"] * 7
    fig = figures.embedding_scatter(coords, groups)
    assert [(t.name, len(t.x)) for t in fig.data] == [("a", 3), ("b", 7)]
    np.testing.assert_array_equal(fig.data[1].x, coords[3:, 0])
    with pytest.raises(ValueError, match="groups"):
        figures.embedding_scatter(coords, groups[:-1])


def test_loss_curves_draws_each_named_term_per_stage():
    h = pd.DataFrame({"stage": ["conquer"] * 2 + ["divide"] * 2, "step": [0, 1, 2, 3],
                      "bcl_loss": [2.0, 1.5, 1.4, 1.4], "scl_loss": [np.nan, np.nan, 3.0, 2.0],
                      "loss": [2.5, 2.0, 5.0, 4.0], "epoch": [0, 0, 0, 0]})
    fig = figures.loss_curves(h)
    names = [t.name for t in fig.data]
    assert "conquer: bcl_loss" in names and "divide: scl_loss" in names
    assert "conquer: scl_loss" not in names  # all-NaN term of a stage is not drawn
    assert all(t.line.dash == "dash" for t in fig.data if t.name.startswith("divide"))
    with pytest.raises(ValueError, match="_loss"):
        figures.loss_curves(h[["stage", "step"]])


def _tidy():
    rows = []
    for seed in (0, 1):
        for model in ("conquer", "unichest"):
            for cls in ("effusion", "nodule", "mass"):
                v = 0.6 + 0.1 * (model == "unichest") + 0.02 * seed
                rows.append(dict(source="s", **{"class": cls}, metric="AUC", value=v,
                                 model=model, seed=seed))
    return pd.DataFrame(rows)


def test_results_bar_averages_seeds_and_draws_their_spread():
    fig = figures.results_bar(_tidy(), "AUC")
    assert [t.name for t in fig.data] == ["conquer", "unichest"]
    assert list(fig.data[1].y) == pytest.approx([0.71] * 3)
    assert list(fig.data[1].error_y.array) == pytest.approx([np.std([0.7, 0.72], ddof=1)] * 3)
    with pytest.raises(ValueError, match="F1"):
        figures.results_bar(_tidy(), "F1")


def test_results_radar_closes_each_polygon():
    fig = figures.results_radar(_tidy(), "AUC")
    t = fig.data[0]
    assert t.type == "scatterpolar" and t.theta[0] == t.theta[-1] and len(t.r) == 4


def test_overlay_puts_the_heatmap_peak_where_it_was():
    img = np.full((8, 8), 0.5)
    hm = np.zeros((2, 2))
    hm[1, 0] = 1.0  # bottom-left quarter is hot
    rgb = figures.overlay_rgb(img, hm, alpha=1.0)
    assert rgb.shape == (8, 8, 3)
    assert rgb[6, 1, 0] > 200 and rgb[6, 1, 2] < 50  # red where hot
    assert rgb[1, 6, 2] > 100 and rgb[1, 6, 0] < 50  # blue where cold
    assert rgb.dtype == np.uint8
    with pytest.raises(ValueError, match="heatmap must have shape"):
        figures.overlay_rgb(img, np.zeros((1, 2, 2)))
    fig = figures.heatmap_overlay(img, hm, box=(0, 4, 4, 8), point=(1, 6))
    assert fig.data[0].type == "image" and len(fig.layout.shapes) == 1


def test_book_renderer_emits_json_and_library_free_html():
    figures.register_renderer()
    assert pio.renderers.default == figures.RENDERER
    fig = figures.embedding_scatter(np.zeros((2, 2)), ["a", "b"])
    bundle = pio.renderers[figures.RENDERER].to_mimebundle(fig.to_dict())
    json.dumps(bundle["application/vnd.plotly.v1+json"])  # JSON-able for live front-ends
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html
    assert "<script src" not in html and "cdn" not in html.lower()
    assert len(html) < 20_000  # plotly.js itself (~4.8 MB) is not embedded


def test_source_examples_caption_each_image_with_its_positive_labels():
    from unichest_lib.data.samples import MultiSourceDataset, SampleTable

    table = SampleTable(classes=("a", "b"), sources=("s",), labels=np.array([[1, 0], [0, 0]], np.float32),
                        source_ids=np.zeros(2, np.int64), patients=np.array(["p", "q"]), texts=["", ""])
    ds = MultiSourceDataset(table, lambda i: np.full((4, 4), i / 2, np.float32))
    images, captions = figures.source_examples({"s": ds}, n=5)
    assert len(images["s"]) == 2 and images["s"][1].shape == (1, 4, 4)
    assert captions["s"] == ["a", "no finding"]


def test_interval_bars_draw_each_interval_as_asymmetric_whiskers():
    import pandas as pd

    from unichest_lib.book import figures

    df = pd.DataFrame({"source": ["a", "a", "mean"], "variant": ["X", "Y", "X"],
                       "mean": [0.7, 0.6, 0.65], "lo": [0.65, 0.5, 0.6], "hi": [0.72, 0.7, 0.7]})
    fig = figures.interval_bars(df)
    x = next(t for t in fig.data if t.name == "X")
    assert list(x.y) == [0.7, 0.65]
    assert list(x.error_y.array) == pytest.approx([0.02, 0.05])  # hi - mean
    assert list(x.error_y.arrayminus) == pytest.approx([0.05, 0.05])  # mean - lo
    with pytest.raises(ValueError, match="interval_bars"):
        figures.interval_bars(df.drop(columns="lo"))


def test_interval_points_colour_by_verdict_and_mark_zero():
    import pandas as pd

    from unichest_lib.book import figures

    df = pd.DataFrame({"claim": ["c1", "c2"], "mean": [0.02, -0.01], "lo": [0.01, -0.03],
                       "hi": [0.03, 0.01], "verdict": ["holds", "inconclusive"]})
    fig = figures.interval_points(df)
    assert {t.name for t in fig.data} == {"holds", "inconclusive"}
    assert fig.layout.shapes and fig.layout.shapes[0].x0 == 0.0
