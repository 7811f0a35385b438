"""Grounding (paper Section IV-E3; MedKLIP Section 4.5): heatmaps, pointing game, IoU/Dice."""

import numpy as np
import pytest
import torch

from unichest_lib.evaluation import grounding as G


def _gaussian(h, w, cy, cx, sigma=4.0):
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))


def test_heatmap_centred_on_box_scores_one_in_pointing_game():
    box = np.array([[20.0, 30.0, 40.0, 50.0]])  # x0, y0, x1, y1
    gt = G.boxes_to_masks(box, 64, 64)
    on = _gaussian(64, 64, cy=40, cx=30)[None]
    off = _gaussian(64, 64, cy=10, cx=55)[None]
    assert G.pointing_game(on, gt).tolist() == [True]
    assert G.pointing_game(off, gt).tolist() == [False]


def _slow_peak(heat, tol=1e-6):
    """The definition, one pixel at a time: of the pixels within tol of the maximum, the one
    nearest their centroid (first in raster order on equal distances)."""
    h = heat.numpy()
    tied = [(i, j) for i in range(h.shape[0]) for j in range(h.shape[1]) if h[i, j] >= h.max() - tol]
    cy = sum(i for i, _ in tied) / len(tied)
    cx = sum(j for _, j in tied) / len(tied)
    return min(tied, key=lambda p: (p[0] - cy) ** 2 + (p[1] - cx) ** 2)


def test_peak_matches_the_slow_definition_on_ties_and_single_maxima():
    rng = np.random.default_rng(1)
    maps = [torch.from_numpy(rng.random((9, 11))).float(),                  # one maximum
            torch.from_numpy(rng.integers(0, 3, (9, 11))).float(),          # many ties
            torch.zeros(9, 11)]                                             # all tied
    maps[1][0, 0] = maps[1][8, 10] = 5.0  # two far-apart peaks: centroid between them
    got = G.peak(torch.stack(maps))
    assert [tuple(r) for r in got.tolist()] == [_slow_peak(m) for m in maps]
    assert tuple(got[2].tolist()) == (4, 5)  # a constant map points at its centre


def test_border_cell_peak_of_a_coarse_grid_is_inside_the_cell_not_on_the_image_edge():
    """A 4 x 4 attention grid whose top-left cell is hottest, upsampled to 128 px as the
    evaluation does: the heat is flat from the cell's centre out to the image corner. The
    peak must stay inside that cell, away from the edge, so that a lesion under the cell
    counts as a hit."""
    grid = torch.zeros(1, 4, 4)
    grid[0, 0, 0] = 1.0
    heat = G.normalise(G.upsample(grid, 128))
    y, x = G.peak(heat)[0].tolist()
    assert 4 <= y < 32 and 4 <= x < 32
    lesion = G.boxes_to_masks(np.array([[4.0, 4.0, 28.0, 28.0]]), 128, 128)
    assert G.pointing_game(heat, lesion).tolist() == [True]
    assert not bool(lesion[0].flatten()[heat.flatten(1).argmax(1)])  # raster order misses


def test_boxes_to_masks_area_and_nan_box():
    m = G.boxes_to_masks(np.array([[2, 3, 6, 5], [np.nan] * 4]), 10, 10)
    assert m[0].sum() == 4 * 2  # x 2..6 -> centres 2.5..5.5 (4), y 3..5 -> 3.5, 4.5 (2)
    assert m[0, 3, 2] and not m[0, 5, 2]
    assert m[1].sum() == 0


def test_iou_dice_against_slow_reference():
    rng = np.random.default_rng(0)
    heat = torch.from_numpy(rng.random((5, 12, 12))).float()
    gt = torch.from_numpy(rng.random((5, 12, 12)) > 0.6)
    iou, dice = G.iou_dice_curve(heat, gt)
    for ti in (0, 37, 80, 100):
        t = G.THRESHOLDS[ti]
        ref_i, ref_d = [], []
        for h, g in zip(heat.numpy(), gt.numpy()):
            p = h >= t
            inter = np.logical_and(p, g).sum()
            union = np.logical_or(p, g).sum()
            ref_i.append(inter / union if union else 0.0)
            ref_d.append(2 * inter / (p.sum() + g.sum()) if (p.sum() + g.sum()) else 0.0)
        assert iou[ti] == pytest.approx(np.mean(ref_i), abs=1e-6)
        assert dice[ti] == pytest.approx(np.mean(ref_d), abs=1e-6)


def test_iou_dice_per_instance_equals_a_threshold_loop_on_ties_nan_and_empty_masks():
    # the histogram route must give the loop's values bit for bit: heat exactly on the grid,
    # all-zero and all-one maps, a NaN pixel (never on), an empty mask
    rng = np.random.default_rng(1)
    heat = torch.from_numpy(rng.random((7, 16, 16))).float()
    heat[:, :4, :4] = torch.from_numpy(G.THRESHOLDS[::6][:16].reshape(4, 4)).float()
    heat[1], heat[2] = 0.0, 1.0
    heat[3, 5, 5] = float("nan")
    gt = torch.from_numpy(rng.random((7, 16, 16)) > 0.5)
    gt[4] = False
    iou, dice = G.iou_dice_instances(heat, gt)
    assert iou.shape == dice.shape == (7, len(G.THRESHOLDS)) and iou.dtype == np.float64
    for j, t in enumerate(G.THRESHOLDS):
        for i in range(7):
            p = (heat[i] >= float(t)).numpy()  # torch compares in float32
            g = gt[i].numpy()
            inter, pa, ga = np.float32((p & g).sum()), np.float32(p.sum()), np.float32(g.sum())
            assert iou[i, j] == np.float32(inter / max(pa + ga - inter, np.float32(1)))
            assert dice[i, j] == np.float32(2 * inter / max(pa + ga, np.float32(1)))


def test_exact_heatmap_gives_dice_one():
    gt = G.boxes_to_masks(np.array([[4, 4, 20, 12], [30, 30, 50, 60]]), 64, 64)
    s = G.grounding_scores(gt.float(), gt)
    assert s["pointing_game"] == 1.0 and s["Dice"] == pytest.approx(1.0) and s["IoU"] == pytest.approx(1.0)
    off = G.grounding_scores(torch.roll(gt.float(), 32, dims=2), gt)
    assert off["pointing_game"] == 0.0 and off["Dice"] < 0.6


def test_combine_attention_follows_eq5():
    torch.manual_seed(0)
    att = torch.rand(2, 3, 4, 5, 5)
    gate = torch.softmax(torch.randn(2, 2), -1)
    got = G.combine_attention(att, gate, lam=0.3)
    ref = 0.3 * att[:, 0] + 0.7 * (gate[:, 0, None, None, None] * att[:, 1]
                                   + gate[:, 1, None, None, None] * att[:, 2])
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.equal(G.combine_attention(att[:, :1]), att[:, 0])
    with pytest.raises(ValueError, match="gate"):
        G.combine_attention(att)


def test_heatmaps_from_output_upsamples_and_normalises():
    att = torch.zeros(1, 1, 2, 4, 4)
    att[0, 0, 0, 1, 2] = 1.0
    hm = G.heatmaps_from_output({"attention": att}, 32)
    assert hm.shape == (1, 2, 32, 32)
    assert hm[0, 0].max() == 1.0 and hm[0, 0].min() == 0.0
    y, x = divmod(int(hm[0, 0].argmax()), 32)
    assert 8 <= y < 16 and 16 <= x < 24  # the hot patch (row 1, col 2) of an 8-pixel grid
    assert hm[0, 1].abs().max() == 0.0  # a constant map becomes zeros


