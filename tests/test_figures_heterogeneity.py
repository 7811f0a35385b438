"""Source separability measures tell heterogeneous sources from identical ones (paper Fig. 1)."""

import numpy as np
import pytest

from unichest_lib.data.samples import MultiSourceDataset, SampleTable
from unichest_lib.evaluation import heterogeneity as het


def _dataset(n_per_source: int, shift: float, seed: int = 0) -> MultiSourceDataset:
    """Two sources of noise images; source 1 is brighter by ``shift`` (0 = identical)."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_source
    src = np.repeat([0, 1], n_per_source)
    images = np.clip(rng.normal(0.4, 0.1, (n, 32, 32)) + shift * src[:, None, None], 0, 1)
    table = SampleTable(classes=("x",), sources=("a", "b"), labels=np.zeros((n, 1), np.float32),
                        source_ids=src.astype(np.int64), patients=np.arange(n).astype(str),
                        texts=["no finding"] * n)
    return MultiSourceDataset(table, lambda i: images[i].astype(np.float32))


def test_pixel_features_have_pooled_pixels_and_a_normalised_histogram():
    ds = _dataset(4, 0.0)
    f = het.representations(ds, kind="pixels", size=4, bins=8)
    assert f.shape == (8, 4 * 4 + 8)
    img = ds[0]["image"][0].numpy()
    np.testing.assert_allclose(f[0, 0], img[:8, :8].mean(), rtol=1e-5)  # first pooled cell
    np.testing.assert_allclose(f[:, 16:].sum(1), 1.0, rtol=1e-5)


def test_separable_sources_score_high_and_identical_sources_near_chance():
    far = het.representations(_dataset(30, 0.3))
    same = het.representations(_dataset(30, 0.0))
    groups = np.repeat(["a", "b"], 30)
    s_far, s_same = het.separability(far, groups), het.separability(same, groups)
    assert s_far["source_accuracy"] > 0.95 and s_far["chance"] == 0.5
    assert s_same["source_accuracy"] < 0.75
    assert s_far["silhouette"] > s_same["silhouette"]


def test_random_encoder_features_are_deterministic_given_the_seed():
    ds = _dataset(2, 0.2)
    a = het.representations(ds, kind="random_encoder", seed=1)
    b = het.representations(ds, kind="random_encoder", seed=1)
    assert a.shape == (4, 512)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", [
    "tsne", pytest.param("umap", marks=pytest.mark.slow)])  # umap: ~25 CPU-s of numba JIT
def test_embed_2d_gives_one_point_per_row_and_keeps_clusters_apart(method):
    f = het.representations(_dataset(10, 0.5))
    xy = het.embed_2d(f, method)
    assert xy.shape == (20, 2) and np.isfinite(xy).all()
    # each source's points lie nearer their own centroid than the other source's
    c0, c1 = xy[:10].mean(0), xy[10:].mean(0)
    d_own = np.r_[np.linalg.norm(xy[:10] - c0, axis=1), np.linalg.norm(xy[10:] - c1, axis=1)]
    d_other = np.r_[np.linalg.norm(xy[:10] - c1, axis=1), np.linalg.norm(xy[10:] - c0, axis=1)]
    assert (d_own < d_other).mean() > 0.9


def test_balanced_indices_caps_each_source():
    ids = np.array([0] * 10 + [1] * 3)
    idx = het.balanced_indices(ids, 4)
    assert np.bincount(ids[idx]).tolist() == [4, 3]
    assert len(np.unique(idx)) == len(idx)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kind"):
        het.representations(_dataset(2, 0.0), kind="vit")
    with pytest.raises(ValueError, match="method"):
        het.embed_2d(np.zeros((10, 3)), "pca")
    with pytest.raises(ValueError, match="rows each"):
        het.separability(np.zeros((4, 2)), ["a", "a", "b", "b"])


def test_dataset_prevalence_counts_only_observed_classes():
    labels = np.array([[1, np.nan], [0, np.nan], [1, 1], [1, 0]], np.float32)
    table = SampleTable(classes=("x", "y"), sources=("a", "b"), labels=labels,
                        source_ids=np.array([0, 0, 1, 1]), patients=np.arange(4).astype(str),
                        texts=[""] * 4)
    ds = MultiSourceDataset(table, lambda i: np.zeros((4, 4), np.float32))
    df = het.dataset_prevalence(ds)
    got = {(r.source, r["class"]): r.prevalence for _, r in df.iterrows()}
    assert got == {("a", "x"): 0.5, ("b", "x"): 1.0, ("b", "y"): 0.5}
