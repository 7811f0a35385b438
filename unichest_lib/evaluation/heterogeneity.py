"""How far apart are the sources? Representations, 2-D maps and separability measures.

The paper motivates UniChest with Fig. 1 (right): a t-SNE of visual representations of four
chest X-ray datasets falls into four clusters — the sources are *heterogeneous*, and one shared
query network must serve all of them (Section I). This module measures the same thing on any
:class:`~unichest_lib.data.samples.MultiSourceDataset`:

1. :func:`representations` — a feature vector per image that needs no trained model:
   down-sampled pixels plus an intensity histogram (``"pixels"``), or the pooled output of a
   frozen, randomly initialised ResNet (``"random_encoder"``), which needs no training and no
   downloaded weights (a trained model's features are
   :func:`unichest_lib.model.inference.pooled_features`);
2. :func:`embed_2d` — a t-SNE or UMAP map of those features, for the eye;
3. :func:`separability` — numbers instead of a picture: how well a linear classifier predicts
   the source from the features (cross-validated accuracy vs. chance) and the silhouette of the
   source clusters;
4. :func:`heterogeneity_sweep` — the separability as the embedded world's ``heterogeneity``
   dial goes from 0 (identical sources) to 1.

Introduced in ``notebooks/01_source_heterogeneity.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..model.encoders import IMAGENET_MEAN, IMAGENET_STD

FEATURE_KINDS = ("pixels", "random_encoder")
MAP_METHODS = ("tsne", "umap")


def balanced_indices(source_ids: np.ndarray, per_source: int | None, seed: int = 0) -> np.ndarray:
    """At most ``per_source`` row indices of each source, drawn without replacement, sorted."""
    source_ids = np.asarray(source_ids)
    if per_source is None:
        return np.arange(len(source_ids))
    if per_source < 1:
        raise ValueError(f"per_source = {per_source!r} must be >= 1 (or None for all rows)")
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(source_ids == s))[:per_source]
             for s in np.unique(source_ids)]
    return np.sort(np.concatenate(picks))


def _images(dataset, indices: np.ndarray, batch_size: int):
    """Batches of images (B, 1, H, W) of the given rows, in order."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from ..data import collate

    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
                        collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            yield batch["image"]


def _pixel_features(x, size: int, bins: int):
    import torch
    import torch.nn.functional as F

    small = F.adaptive_avg_pool2d(x, size).flatten(1)
    edges = torch.linspace(0, 1, bins + 1)[1:-1]
    idx = torch.bucketize(x.flatten(1).clamp(0, 1), edges)
    hist = torch.zeros(len(x), bins).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float))
    return torch.cat([small, hist / x[0].numel()], 1)


def random_encoder(backbone: str = "resnet18", seed: int = 0):
    """A frozen, randomly initialised torchvision ResNet without its classifier (eval mode)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = getattr(torchvision.models, backbone)(weights=None)
    net.fc = torch.nn.Identity()
    return net.eval().requires_grad_(False)


def representations(dataset, indices: Sequence[int] | None = None, *, kind: str = "pixels",
                    size: int = 16, bins: int = 16, backbone: str = "resnet18", seed: int = 0,
                    batch_size: int = 64) -> np.ndarray:
    """One feature vector per image (rows ``indices`` of ``dataset``, default all): (N, F).

    ``kind="pixels"``: the image average-pooled to ``size`` x ``size`` plus a ``bins``-bin
    intensity histogram. ``kind="random_encoder"``: the 512/2048-d pooled output of a frozen,
    randomly initialised ResNet (channel-repeated, ImageNet-normalised input)."""
    import torch

    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind = {kind!r} is not valid; choose one of {FEATURE_KINDS}")
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=int)
    if len(idx) == 0:
        raise ValueError("representations: no rows selected")
    net = random_encoder(backbone, seed) if kind == "random_encoder" else None
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for x in _images(dataset, idx, batch_size):
            if net is None:
                out.append(_pixel_features(x, size, bins))
            else:
                out.append(net((x.repeat(1, 3, 1, 1) - mean) / std))
    return torch.cat(out).numpy().astype(np.float32)


def _standardise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return (f - f.mean(0)) / (f.std(0) + 1e-8)


def embed_2d(features: np.ndarray, method: str = "tsne", *, seed: int = 0,
             perplexity: float | None = None) -> np.ndarray:
    """A 2-D map (N, 2) of standardised features, by t-SNE or UMAP (after PCA to <= 50 dims).

    ``perplexity`` (t-SNE only; default min(30, (N - 1) / 3)) is the effective number of
    neighbours each point attends to."""
    from sklearn.decomposition import PCA

    if method not in MAP_METHODS:
        raise ValueError(f"method = {method!r} is not valid; choose one of {MAP_METHODS}")
    f = _standardise(features)
    if len(f) < 5:
        raise ValueError(f"embed_2d needs at least 5 points, got {len(f)}")
    f = PCA(n_components=min(50, *f.shape), random_state=seed).fit_transform(f)
    if perplexity is None:
        perplexity = float(min(30, max(2, (len(f) - 1) // 3)))
    elif not 0 < perplexity < len(f):
        raise ValueError(f"perplexity = {perplexity!r} must lie in (0, {len(f)}), the number of points")
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=500).fit_transform(f)
    import umap

    return umap.UMAP(n_neighbors=int(min(15, len(f) - 1)), random_state=seed,
                     n_jobs=1).fit_transform(f)


def separability(features: np.ndarray, groups: Sequence, *, folds: int = 5,
                 seed: int = 0) -> dict[str, float]:
    """How well the groups (sources) separate in feature space.

    ``source_accuracy``: cross-validated accuracy of a logistic-regression source classifier
    (stratified ``folds``-fold); ``chance``: the majority-class fraction it must beat;
    ``silhouette``: mean silhouette of the groups (-1..1, Euclidean, standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    g = np.asarray(groups)
    f = np.asarray(features, dtype=np.float64)
    if len(f) != len(g):
        raise ValueError(f"separability: {len(f)} feature rows but {len(g)} group labels")
    _, counts = np.unique(g, return_counts=True)
    if len(counts) < 2 or counts.min() < folds:
        raise ValueError(f"separability needs >= 2 groups with >= {folds} rows each; "
                         f"got counts {counts.tolist()}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    acc = cross_val_score(clf, f, g, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"source_accuracy": float(acc.mean()), "chance": float(counts.max() / counts.sum()),
            "silhouette": float(silhouette_score(_standardise(f), g))}


def heterogeneity_sweep(cfg: Config, levels: Sequence[float], *, split: str = "train",
                        kind: str = "pixels", per_source: int | None = 100,
                        n_per_source: int | None = None, progress: bool = True) -> pd.DataFrame:
    """:func:`separability` of ``cfg.sources`` at each ``heterogeneity`` level of the
    embedded world; a tidy DataFrame (heterogeneity, measure, value).

    ``n_per_source`` (default: ``cfg``'s) sets the size of each swept world, so a sweep can
    render smaller worlds than the chapter's own; ``per_source`` caps the images measured."""
    from tqdm.auto import tqdm

    from ..config import progress_bars
    from ..data import make_dataset

    if not len(levels):
        raise ValueError("levels is empty; give e.g. [0.0, 0.5, 1.0]")
    rows = []
    for h in tqdm(list(levels), desc="heterogeneity", disable=not progress_bars(progress)):
        c = cfg.replace(heterogeneity=float(h),  # validated: 0 <= h <= 1
                        n_per_source=n_per_source or cfg.n_per_source)
        ds = make_dataset(c, c.sources, split)
        idx = balanced_indices(ds.table.source_ids, per_source, c.seed)
        feats = representations(ds, idx, kind=kind, backbone=c.backbone, seed=c.seed)
        names = np.asarray(ds.sources)[ds.table.source_ids[idx]]
        for m, v in separability(feats, names, seed=c.seed).items():
            rows.append({"heterogeneity": float(h), "measure": m, "value": v})
    return pd.DataFrame(rows)


def label_by_visibility(cfg: Config, sources: Sequence[str] | None = None, *,
                        levels: Sequence[float] = (0.0, 1.0), bins: int = 5) -> pd.DataFrame:
    """The label-meaning dial made visible: of the findings an image of each source truly
    shows, the share its labeller recorded as positive, by how visible the finding is
    (:func:`unichest_lib.data.world.population.conspicuity`, in ``bins`` equal bins), at each
    ``label_meaning`` level (other dials as ``cfg`` sets them). Tidy: source, label_meaning,
    visibility (bin centre), labelled, findings. Needs no pixels (population only)."""
    from ..config import set_dial
    from ..data.world import world_of
    from ..data.world.population import conspicuity

    if cfg.data != "embedded":
        raise ValueError("label_by_visibility reads the embedded world's true findings; "
                         f"data = {cfg.data!r} has none")
    rows = []
    edges = np.linspace(0, 1, bins + 1)
    for lvl in levels:
        world = world_of(set_dial(cfg, "label_meaning", lvl))
        for s in (cfg.sources if sources is None else sources):
            p = world.population(s)
            vis, present = conspicuity(p.jitter), p.truth
            b = np.clip(np.digitize(vis, edges[1:-1]), 0, bins - 1)
            for k in range(bins):
                sel = present & (b == k)
                n = int(sel.sum())
                rows.append({"source": s, "label_meaning": float(lvl),
                             "visibility": float((edges[k] + edges[k + 1]) / 2),
                             "labelled": float((p.state[sel] == 1).mean()) if n else np.nan,
                             "findings": n})
    return pd.DataFrame(rows)


def label_definitions(cfg: Config, sources: Sequence[str] | None = None, *,
                      levels: Sequence[float] = (0.0, 1.0)) -> pd.DataFrame:
    """The label-meaning dial's class definitions made visible: for each class some labeller
    defines broadly (:data:`unichest_lib.data.world.sources.BROAD_DEFINITIONS`) and each
    finding it may cover, the share of images that show that finding *without* the class's
    own finding and are still labelled with the class, per source that labels the class and
    per ``label_meaning`` level. Tidy: class, covers, source, label_meaning, labelled, images.
    Needs no pixels (population only)."""
    from ..config import set_dial
    from ..data.labels import embedded_label_space
    from ..data.world import world_of
    from ..data.world.population import FINDINGS
    from ..data.world.sources import BROAD_DEFINITIONS

    if cfg.data != "embedded":
        raise ValueError("label_definitions reads the embedded world's true findings; "
                         f"data = {cfg.data!r} has none")
    pairs = sorted({(c, m) for d in BROAD_DEFINITIONS.values() for c, ms in d.items()
                    for m in ms})
    rows = []
    for lvl in levels:
        world = world_of(set_dial(cfg, "label_meaning", lvl))
        for s in (cfg.sources if sources is None else sources):
            p = world.population(s)
            for c, m in pairs:
                if c not in embedded_label_space(s):
                    continue
                sel = p.truth[:, FINDINGS.index(m)] & ~p.truth[:, FINDINGS.index(c)]
                n = int(sel.sum())
                rows.append({"class": c, "covers": m, "source": s, "label_meaning": float(lvl),
                             "labelled": float((p.state[sel, FINDINGS.index(c)] == 1).mean())
                             if n else np.nan, "images": n})
    return pd.DataFrame(rows)


def real_prevalence(cache_dir: str | None = None) -> pd.DataFrame:
    """Class prevalence of each real dataset whose label metadata torchxrayvision ships
    (paper Fig. 1, left): a tidy DataFrame (source, class, prevalence), classes canonical."""
    from ..data.labels import ALL_CLASSES
    from ..data.world import priors

    stats = priors.real_statistics(cache_dir)

    order = {c: i for i, c in enumerate(ALL_CLASSES)}
    rows = [{"source": name, "class": c, "prevalence": float(p)}
            for name, st in stats.items() for c, p in st["prevalence"].items()]
    df = pd.DataFrame(rows)
    rank = df["class"].map(order).fillna(len(order))  # union order, unknown names last
    return df.assign(_r=rank).sort_values(["_r", "source"], kind="stable").drop(columns="_r")


def dataset_prevalence(dataset) -> pd.DataFrame:
    """Class prevalence per source of a :class:`~unichest_lib.data.samples.MultiSourceDataset`
    among the images whose source observes the class (missing classes are left out)."""
    t = dataset.table
    rows = []
    for si, s in enumerate(t.sources):
        y = t.labels[t.source_ids == si]
        observed = ~np.isnan(y).all(0)
        prev = np.nanmean(np.where(np.isnan(y), np.nan, y)[:, observed], axis=0)
        rows += [{"source": s, "class": c, "prevalence": float(p)}
                 for c, p in zip(np.asarray(t.classes)[observed], prev)]
    return pd.DataFrame(rows)


__all__ = ["FEATURE_KINDS", "MAP_METHODS", "balanced_indices", "dataset_prevalence", "embed_2d",
           "heterogeneity_sweep", "label_by_visibility", "label_definitions", "random_encoder",
           "real_prevalence",
           "representations", "separability"]
