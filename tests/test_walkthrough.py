"""Chapter 04's step-by-step example (unichest_lib.book.walkthrough): which image it picks and
how it draws the lesion."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from unichest_lib.book import walkthrough
from unichest_lib.config import resolve
from unichest_lib.data.label_spaces import source_classes, union_classes

from helpers import fake_dataset


# ---- picking the example ------------------------------------------------------------------
def test_zero_shot_pick_is_a_class_no_pretraining_source_labels():
    cfg = resolve("smoke")
    model = SimpleNamespace(classes=union_classes(cfg.sources, cfg.data))
    src, finding = walkthrough.zero_shot_pick(cfg, model)
    assert src in cfg.downstream and src != "chestxdet10"  # grounding only, as in the paper
    assert finding in source_classes(src, cfg.data)
    assert finding not in model.classes


def test_zero_shot_pick_falls_back_to_a_seen_class_when_every_class_is_known():
    cfg = resolve("smoke")
    everything = {c for s in cfg.downstream for c in source_classes(s, cfg.data)}
    model = SimpleNamespace(classes=tuple(union_classes(cfg.sources, cfg.data)) + tuple(everything))
    src, finding = walkthrough.zero_shot_pick(cfg, model)
    assert src != "chestxdet10" and finding in model.classes


def test_first_positive_is_the_first_observed_positive_in_dataset_order():
    ds = fake_dataset(n=12, seed=3)
    labels = ds.table.labels
    i, finding = walkthrough.first_positive(ds, "pneumothorax")
    assert finding == "pneumothorax" and labels[i, 1] == 1
    assert not (labels[:i, 1] == 1).any()
    j, any_finding = walkthrough.first_positive(ds)
    assert labels[j, ds.classes.index(any_finding)] == 1 and not (labels[:j] == 1).any()


def test_first_positive_with_lesion_skips_positives_without_a_mask():
    ds = fake_dataset(n=12, seed=1, classes=("mass", "nodule", "fracture"), with_masks=True)
    # "fracture" (the third class) has positives but never a visible lesion in this dataset
    assert (ds.table.labels[:, 2] == 1).any()
    with pytest.raises(ValueError, match="with a lesion mask"):
        walkthrough.first_positive(ds, "fracture", lesion=True)
    i, finding = walkthrough.first_positive(ds, lesion=True)
    assert finding in ("mass", "nodule") and ds[i]["seg"][ds.classes.index(finding)].any()


def test_first_positive_names_bad_input():
    with pytest.raises(ValueError, match="not a class"):
        walkthrough.first_positive(fake_dataset(n=4), "hernia")
    with pytest.raises(ValueError, match="with_masks=True"):
        walkthrough.first_positive(fake_dataset(n=4), lesion=True)


# ---- drawing the lesion -------------------------------------------------------------------
def test_mask_outline_is_the_ring_just_outside_the_lesion():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True  # 3 x 3 square
    ring = walkthrough.mask_outline(mask)
    assert not (ring & mask).any()
    assert ring.sum() == 4 * 3  # 4-neighbourhood: one row or column of 3 on each side
    assert ring[1, 3:6].all() and ring[5, 3:6].all() and ring[2:5, 2].all() and ring[2:5, 6].all()
    edge = np.zeros((4, 4), bool)
    edge[0, 0] = True  # at the image border the ring is cut, not wrapped around
    assert walkthrough.mask_outline(edge).sum() == 2
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        walkthrough.mask_outline(np.zeros((1, 4, 4), bool))


def test_draw_outline_paints_only_the_ring_and_checks_the_shape():
    rgb = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[3:5, 3:5] = True
    out = walkthrough.draw_outline(rgb, mask)
    green = (out == walkthrough.GREEN).all(-1)
    assert (green == walkthrough.mask_outline(mask)).all()
    assert not rgb.any(), "the input image is not changed"
    with pytest.raises(ValueError, match="same"):
        walkthrough.draw_outline(rgb, np.zeros((4, 4), bool))


def test_lesion_overlay_shows_the_outline_and_the_peak():
    img = np.full((16, 16), 0.5, np.float32)
    heat = np.zeros((2, 2), np.float32)
    heat[0, 1] = 1.0
    mask = np.zeros((16, 16), bool)
    mask[2:6, 10:14] = True
    fig = walkthrough.lesion_overlay(img, heat, mask, point=(12, 4), title="t")
    assert fig.data[0].type == "image" and fig.layout.title.text == "t"
    assert (fig.data[1].x[0], fig.data[1].y[0]) == (12, 4)  # the peak's cross
    png = base64.b64decode(fig.data[0].source.split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    green = (rgb == walkthrough.GREEN).all(-1)
    assert (green == walkthrough.mask_outline(mask)).all()
