"""The grounding explorer: pick an image and a finding, see where the model looked.

:class:`Explorer` wraps a trained model and a dataset with ground-truth masks. In Jupyter,
:meth:`Explorer.widget` gives two drop-downs (image, finding) and the heatmap overlay of
:func:`unichest_lib.evaluation.grounding.grounding_heatmaps` with the lesion's box and the
heatmap's peak; :meth:`Explorer.static_grid` renders a fixed selection as one plotly figure,
which is what the built book shows (widgets need a live kernel).

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..evaluation.grounding import grounding_heatmaps, peak


class Explorer:
    """Heatmaps of ``model`` on ``dataset`` (a
    :class:`~unichest_lib.data.samples.MultiSourceDataset`, ideally built ``with_masks=True``
    so the ground truth can be drawn)."""

    def __init__(self, model, dataset, cfg: Config, *, by: str = "name"):
        if len(dataset) == 0:
            raise ValueError("Explorer: the dataset is empty; choose a split or source with images")
        self.model, self.dataset, self.cfg, self.by = model, dataset, cfg, by
        self.classes = tuple(dataset.classes)

    def _class_index(self, finding: str) -> int:
        if finding not in self.classes:
            raise ValueError(f"finding {finding!r} is not a class of this dataset; choose one "
                             f"of {self.classes}")
        return self.classes.index(finding)

    def _item(self, index: int) -> dict:
        if not 0 <= index < len(self.dataset):
            raise IndexError(f"image index {index} is outside 0..{len(self.dataset) - 1}")
        return self.dataset[index]

    def positives(self, limit: int | None = None) -> list[tuple[int, str]]:
        """(image index, finding) pairs whose finding is an observed positive, in dataset order."""
        table = self.dataset.table
        rows, cols = np.nonzero((np.nan_to_num(table.labels) > 0.5) & table.mask)
        pairs = [(int(r), self.classes[c]) for r, c in zip(rows, cols)]
        return pairs[:limit] if limit is not None else pairs

    def heatmap(self, index: int, finding: str) -> np.ndarray:
        """(H, W) heatmap in [0, 1] of ``finding`` on image ``index``."""
        j = self._class_index(finding)
        image = self._item(index)["image"][None]
        return grounding_heatmaps(self.model, image, self.classes, self.cfg, by=self.by)[0, j].numpy()

    def view(self, index: int, finding: str, *, size_px: int = 300):
        """One overlay figure: heatmap, ground-truth box (green, when known) and peak (cross);
        the title gives the image, the finding ("(negative)" unless it is an observed
        positive), the predicted probability and whether the peak hits the lesion."""
        from . import figures

        item, j = self._item(index), self._class_index(finding)
        heat = self.heatmap(index, finding)
        y, x = peak(torch.as_tensor(heat)[None])[0].tolist()  # as the pointing game sees it
        box, hit = None, ""
        if "seg" in item and bool(item["seg"][j].any()):
            box = item["boxes"][j].tolist() if "boxes" in item else None
            hit = " hit" if bool(item["seg"][j][y, x]) else " miss"
        with torch.no_grad():
            p = float(self.model.predict_proba(item["image"][None], [finding])[0, 0])
        positive = bool(item["mask"][j]) and float(item["labels"][j]) > 0.5
        title = f"#{index} {finding}{'' if positive else ' (negative)'} p={p:.2f}{hit}"
        return figures.heatmap_overlay(item["image"].numpy(), heat, title=title, box=box,
                                       point=(x, y), size_px=size_px)

    def hits_and_misses(self, instances, n: int = 3) -> list[tuple[int, str]]:
        """(index, finding) pairs of a Fig. 7-style gallery: ``n`` lesions whose pointing-game
        peak hit (first row) and ``n`` whose peak missed, from
        :func:`~unichest_lib.evaluation.grounding.grounding_instances` of this dataset (columns
        ``row``, ``class``, ``hit``); each half takes one lesion per class before repeating a
        class, in dataset order. A half with fewer lesions than ``n`` is shorter."""
        pairs = []
        for hit in (True, False):
            d = instances[instances["hit"].astype(bool) == hit]
            first = d.drop_duplicates("class")
            rest = d.drop(first.index)
            chosen = pd.concat([first, rest]).head(n)
            pairs += [(int(r), str(c)) for r, c in zip(chosen["row"], chosen["class"])]
        return pairs

    def static_grid(self, pairs: Sequence[tuple[int, str]] | None = None, *, n: int = 6,
                    cols: int = 3, tile_px: int = 220):
        """A grid of overlays for the book: ``pairs`` of (index, finding), default the first
        ``n`` positives; each tile titled with its finding and pointing-game hit or miss."""
        from plotly.subplots import make_subplots

        pairs = list(pairs) if pairs is not None else self.positives(n)
        if not pairs:
            raise ValueError("static_grid: no (image, finding) pairs to show; this dataset has "
                             "no observed positives, pass `pairs` explicitly")
        views = [self.view(i, f) for i, f in pairs]
        rows = -(-len(views) // cols)
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=[v.layout.title.text for v in views],
                            horizontal_spacing=0.01, vertical_spacing=0.06)
        for k, v in enumerate(views):
            r, c = divmod(k, cols)
            for trace in v.data:
                fig.add_trace(trace, row=r + 1, col=c + 1)
            for shape in v.layout.shapes:
                fig.add_shape(shape, row=r + 1, col=c + 1)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False, autorange="reversed")
        fig.update_annotations(font_size=11)
        fig.update_layout(height=rows * (tile_px + 30) + 50, width=cols * tile_px + 20,
                          margin=dict(l=5, r=5, t=70, b=5), showlegend=False)  # t: room for
        # plotly's toolbar above the first row's titles
        return fig

    def annotated_rgb(self, index: int, finding: str) -> tuple[np.ndarray, str]:
        """The overlay as a uint8 (H, W, 3) array with the box and peak drawn into it, and its
        title; what the live widget shows (no plotly widget needed)."""
        from .figures import overlay_rgb

        fig = self.view(index, finding)
        item, j = self._item(index), self._class_index(finding)
        rgb = overlay_rgb(item["image"].numpy(), self.heatmap(index, finding)).copy()
        h, w = rgb.shape[:2]
        for shape in fig.layout.shapes:  # the ground-truth box, green
            x0, x1 = sorted(int(round(min(max(v, 0), w - 1))) for v in (shape.x0, shape.x1))
            y0, y1 = sorted(int(round(min(max(v, 0), h - 1))) for v in (shape.y0, shape.y1))
            rgb[[y0, y1], x0:x1 + 1] = (0, 255, 102)
            rgb[y0:y1 + 1, [x0, x1]] = (0, 255, 102)
        x, y = int(fig.data[1].x[0]), int(fig.data[1].y[0])  # the peak, a white cross
        rgb[y, max(x - 3, 0):x + 4] = 255
        rgb[max(y - 3, 0):y + 4, x] = 255
        return rgb, fig.layout.title.text

    def widget(self):
        """An ipywidgets explorer: image and finding drop-downs, the title and the overlay."""
        import io

        import ipywidgets as w
        from PIL import Image

        image = w.Dropdown(options=list(range(len(self.dataset))), description="image")
        finding = w.Dropdown(options=list(self.classes), description="finding")
        first = self.positives(1)
        if first:
            image.value, finding.value = first[0]
        title, picture = w.HTML(), w.Image(format="png", width=320, height=320)

        def update(_change=None):
            rgb, text = self.annotated_rgb(image.value, finding.value)
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG")
            picture.value, title.value = buf.getvalue(), f"<b>{text}</b>"

        update()
        image.observe(update, names="value")
        finding.observe(update, names="value")
        return w.VBox([w.HBox([image, finding]), title, picture])


__all__ = ["Explorer"]
