"""A picture of the world: a grid of images from every source with their positive labels.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import textwrap

import numpy as np

from ... import config as C


def grid_figure(world, n_per_source: int = 4, sources=None, split: str = "train"):
    """A matplotlib Figure: one row per source, ``n_per_source`` images with their observed
    positive labels (``?`` marks an uncertain/missing-in-space count)."""
    import matplotlib.pyplot as plt

    sources = tuple(sources or C.ALL_SOURCES)
    fig, axes = plt.subplots(len(sources), n_per_source, squeeze=False,
                             figsize=(1.9 * n_per_source, 2.1 * len(sources)))
    for r, source in enumerate(sources):
        ds = world.dataset([source], split)
        for c in range(n_per_source):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(ds):
                continue
            item = ds[c]
            ax.imshow(item["image"][0].numpy(), cmap="gray", vmin=0, vmax=1)
            pos = [k for k, y, m in zip(ds.classes, item["labels"], item["mask"]) if m and y > 0.5]
            ax.set_title("\n".join(textwrap.wrap(", ".join(pos) or "(none)", 26)[:3]), fontsize=6)
        axes[r, 0].text(-0.08, 0.5, source, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    fig.suptitle(f"embedded world (synthetic, not clinical): heterogeneity="
                 f"{world.cfg.heterogeneity}, {world.cfg.image_size} px", fontsize=9)
    fig.tight_layout()
    return fig


def save_grid(world, out: str, n_per_source: int = 4) -> str:
    """Write :func:`grid_figure` to ``out`` (PNG or anything matplotlib saves)."""
    import matplotlib

    matplotlib.use("Agg")
    fig = grid_figure(world, n_per_source)
    fig.savefig(out, dpi=130)
    return out


def finding_gallery(world, source: str = "chestxdet10", n: int = 8):
    """Images of ``source`` with the outline of every finding mask (for grounding)."""
    import matplotlib.pyplot as plt

    ds = world.dataset([source], "train", with_masks=True)
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3), squeeze=False)
    for c in range(n):
        ax = axes[0, c]
        ax.axis("off")
        if c >= len(ds):
            continue
        it = ds[c]
        ax.imshow(it["image"][0].numpy(), cmap="gray", vmin=0, vmax=1)
        names = []
        for j in np.flatnonzero(it["seg"].flatten(1).any(1).numpy()):
            ax.contour(it["seg"][j].numpy(), levels=[0.5], linewidths=0.6, colors=[f"C{j % 10}"])
            names.append(ds.classes[j])
        ax.set_title("\n".join(textwrap.wrap(", ".join(names) or "(none)", 26)[:3]), fontsize=6)
    fig.tight_layout()
    return fig
