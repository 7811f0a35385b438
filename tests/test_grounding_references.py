"""Grounding against honest baselines (issue #15): the random peak, the lung centres and the
class's mean training mask, each checked against a slow obvious reference on tiny hand-made
masks; Dice thresholds chosen on the validation split only; the per-class table with
intervals, end to end at ``smoke``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unichest_lib.config import resolve
from unichest_lib.data.world import lungs
from unichest_lib.data.world import phantom as P
from unichest_lib.evaluation import grounding as G
from unichest_lib.evaluation import grounding_references as GB
from unichest_lib.evidence import grounding_measures as GM

from helpers import FAKE_CLASSES, fake_dataset

ROOT = Path(__file__).resolve().parents[1]
CFG = resolve("smoke", amp=False, eval_batch_size=8)


def _masks():
    """Three 6 x 7 masks: a 2 x 3 block, a single pixel, an L shape."""
    m = np.zeros((3, 6, 7), bool)
    m[0, 1:3, 2:5] = True
    m[1, 5, 6] = True
    m[2, 0:4, 0] = True
    m[2, 3, 0:3] = True
    return torch.from_numpy(m)


# ---- random peak ---------------------------------------------------------------------------
def test_random_peak_expected_hit_is_the_area_fraction_and_matches_monte_carlo():
    gt = _masks()
    got = GB.random_peak_hits(gt)
    slow = [sum(bool(m[i, j]) for i in range(6) for j in range(7)) / 42 for m in gt]
    assert got == pytest.approx(slow)
    rng = np.random.default_rng(0)
    draws = 200_000
    rows, cols = rng.integers(0, 6, draws), rng.integers(0, 7, draws)
    mc = gt.numpy()[:, rows, cols].mean(1)
    se = np.sqrt(got * (1 - got) / draws)
    assert np.all(np.abs(mc - got) < 5 * se + 1e-12)


def test_random_peak_map_is_constant_and_its_best_dice_is_the_whole_image():
    base = GB.Baselines(("a",), ((2.0, 2.0),), GB.centre_map((2.0, 2.0), (6, 7)),
                        torch.zeros(1, 6, 7), np.zeros(1, int))
    heat = base.heatmaps("random peak", 3)[:, 0]
    assert heat.shape == (3, 6, 7) and heat.abs().max() == 0
    gt = _masks()
    _, dice = G.iou_dice_instances(heat, gt)
    a = GB.random_peak_hits(gt)
    assert dice[:, 0] == pytest.approx(2 * a / (1 + a))  # threshold 0: every pixel on
    assert np.all(dice[:, 1:] == 0)  # any threshold above 0: nothing on
    assert GB.choose_threshold(dice) == 0.0


# ---- lung centres --------------------------------------------------------------------------
def test_centre_map_and_hits_against_a_pixel_loop():
    centres = ((1.2, 1.6), (4.0, 5.4))
    got = GB.centre_map(centres, (6, 7)).numpy()
    d = np.array([[min(np.hypot(i - r, j - c) for r, c in centres) for j in range(7)]
                  for i in range(6)])
    ref = 1 - d / d.max()
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert got == pytest.approx(ref, abs=1e-6)
    assert tuple(G.peak(torch.from_numpy(ref)[None].float())[0].tolist()) in ((1, 2), (4, 5))
    gt = _masks()
    slow = [np.mean([bool(m[int(round(r)), int(round(c))]) for r, c in centres]) for m in gt]
    assert GB.centre_hits(centres, gt) == pytest.approx(slow)  # (1, 2) is in mask 0 only
    assert GB.centre_hits(centres, gt).tolist() == [0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="finite"):
        GB.centre_map([(np.nan, 1.0)], 5)


def test_lung_centroids_are_the_mean_of_each_lung_fields_pixels():
    cfg = resolve("smoke", image_size=32)
    (r_r, c_r), (r_l, c_l) = lungs.lung_field_centroids(cfg, "chestxdet10", n=5, batch=2)
    from unichest_lib import config as C
    from unichest_lib.data.world import sources as S

    acq = S.effective("chestxdet10", S.dials(cfg.heterogeneity, {})).acquisition
    rng = np.random.default_rng([cfg.world_seed, C.ALL_SOURCES.index("chestxdet10"), 901])
    slow = []
    for n in (2, 2, 1):  # the same draws, one anatomy at a time
        a = P.sample_anatomy(rng, n, scale=acq.scale, rotation_deg=acq.rotation)
        x, y = P.patient_grid(a, 32)
        for b in range(n):
            per = []
            for side in (1.0, -1.0):
                f = P.lung_field(a, x, y, np.full(n, side, P.F32))[b] > 0.5
                pix = [(i, j) for i in range(32) for j in range(32) if f[i, j]]
                per.append((np.mean([p[0] for p in pix]), np.mean([p[1] for p in pix])))
            slow.append(per)
    slow = np.array(slow).mean(0)
    assert (r_r, c_r) == pytest.approx(tuple(slow[0]), abs=1e-6)
    assert (r_l, c_l) == pytest.approx(tuple(slow[1]), abs=1e-6)
    assert c_r < 16 < c_l and 8 < r_r < 24  # the patient's right lung is on the image left


# ---- mean mask -----------------------------------------------------------------------------
@pytest.fixture()
def splits(monkeypatch):
    """make_dataset of the baselines module returns a hand-made dataset per split, from
    ``seeds[split]`` (tests change one split's masks by changing its seed)."""
    seeds = {"train": 0, "valid": 1, "test": 2}

    def fake(cfg, sources, split, *, with_masks=False):
        return fake_dataset(n=21, seed=seeds[split], with_masks=with_masks)

    monkeypatch.setattr(GB, "make_dataset", fake)
    return seeds


def test_mean_mask_is_the_mean_of_the_training_masks_of_each_class(splits):
    maps, count, classes = GB.mean_masks(CFG, "chestxdet10", "train")
    ds = fake_dataset(n=21, seed=0, with_masks=True)
    for j in range(len(classes)):
        masks = []
        for i in range(len(ds)):
            item = ds[i]
            seg = np.asarray(item["seg"][j])
            if item["labels"][j] > 0.5 and item["mask"][j] and seg.any():
                masks.append(seg.astype(float))
        ref = np.mean(masks, 0)
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        assert count[j] == len(masks)
        assert maps[j].numpy() == pytest.approx(ref, abs=1e-6)


def test_mean_mask_uses_only_training_masks(splits):
    before = GB.fit_baselines(CFG, "chestxdet10")
    splits["test"], splits["valid"] = 7, 8
    after = GB.fit_baselines(CFG, "chestxdet10")
    assert torch.equal(before.mean_maps, after.mean_maps)
    splits["train"] = 9
    assert not torch.equal(before.mean_maps, GB.fit_baselines(CFG, "chestxdet10").mean_maps)


# ---- thresholds from validation ---------------------------------------------------------------
class BrightModel(nn.Module):
    """Attends to bright pixels (the fake lesions) for every class query."""

    def __init__(self):
        super().__init__()
        self.classes = FAKE_CLASSES
        self.w = nn.Parameter(torch.zeros(1))

    def class_queries(self, names):
        return torch.zeros(len(names), 4)

    def forward(self, images, texts=None, *, queries=None, return_attention=False):
        grid = nn.functional.avg_pool2d(images, 4)[:, 0]  # (B, 16, 16): lesions smeared
        att = grid[:, None, None].expand(-1, 1, queries.shape[0], -1, -1)
        return {"logits": torch.zeros(len(images), queries.shape[0]), "attention": att}


def test_dice_threshold_is_chosen_on_validation_not_on_test(splits, monkeypatch):
    monkeypatch.setattr(G, "make_dataset", GB.make_dataset)
    monkeypatch.setattr(GM, "variant_model", lambda cfg, name, seed, progress=True: BrightModel())
    ms, info = GM.grounding_baseline_measures(CFG, seeds=(0, 1), n_boot=20, progress=False)
    table = G.grounding_table(BrightModel(), CFG)
    splits["test"] = 5
    ms2, info2 = GM.grounding_baseline_measures(CFG, seeds=(0, 1), n_boot=20, progress=False)
    key = ("UniChest", "Dice", "macro")
    assert ms2[key].points[0] != ms[key].points[0]  # other test lesions, other scores ...
    assert info2["thresholds"] == info["thresholds"]  # ... at the same thresholds
    assert G.grounding_table(BrightModel(), CFG).query("metric == 'threshold'")["value"].tolist() \
        == table.query("metric == 'threshold'")["value"].tolist()
    valid = GB.split_scores(CFG, "chestxdet10", "valid", model=BrightModel())
    assert info["thresholds"]["UniChest"] == [GB.choose_threshold(valid.scores[GB.MODEL]["dice"])] * 2
    splits["valid"] = 6
    _, info3 = GM.grounding_baseline_measures(CFG, seeds=(0,), n_boot=20, progress=False)
    valid = GB.split_scores(CFG, "chestxdet10", "valid", model=BrightModel())
    assert info3["thresholds"]["UniChest"] == [GB.choose_threshold(valid.scores[GB.MODEL]["dice"])]
    with pytest.raises(ValueError, match="scored split"):
        G.grounding_table(BrightModel(), CFG, threshold_split="test")


def test_choose_threshold_maximises_the_mean_dice_and_refuses_no_lesion():
    dice = np.zeros((2, len(G.THRESHOLDS)))
    dice[0, 30], dice[1, 30], dice[1, 60] = 0.5, 0.1, 0.7
    assert GB.choose_threshold(dice) == G.THRESHOLDS[60]
    assert GB.at_threshold(dice, 0.3).tolist() == [0.5, 0.1]
    with pytest.raises(ValueError, match="no validation lesion"):
        GB.choose_threshold(np.zeros((0, len(G.THRESHOLDS))))
    with pytest.raises(ValueError, match="not on the grid"):
        GB.at_threshold(dice, 0.305)


def test_class_replicates_against_a_loop():
    rng = np.random.default_rng(3)
    vals, cls = rng.random(9), np.array(list("aabbbccab"))
    w = rng.integers(0, 3, (5, 9)).astype(float)
    w[0, cls == "c"] = 0  # a resample without any "c" lesion
    points, reps = GM.class_replicates(vals, cls, ["a", "b", "c"], w)
    for k, c in enumerate("abc"):
        idx = [i for i in range(9) if cls[i] == c]
        assert points[k] == pytest.approx(np.mean(vals[idx]))
        for b in range(5):
            tot = sum(w[b, i] for i in idx)
            ref = sum(w[b, i] * vals[i] for i in idx) / tot if tot else np.nan
            assert reps[k, b] == pytest.approx(ref, nan_ok=True)
    assert points[3] == pytest.approx(points[:3].mean())
    assert reps[3, 0] == pytest.approx(np.nanmean(reps[:3, 0]))
    p2, r2 = GM.class_replicates(vals, cls, ["a", "b", "c"], w, kept=[True, False, True])
    assert p2[3] == pytest.approx((points[0] + points[2]) / 2)  # "b" flagged: not in the macro
    assert r2[3, 0] == pytest.approx(reps[0, 0]) and np.isnan(r2[2, 0])


def test_strongest_baseline_is_chosen_per_class_and_macro_skips_flagged():
    from unichest_lib.evidence.measures import Measure

    rng = np.random.default_rng(1)
    classes, seeds, B = ["a", "b", "c"], 2, 7
    means = {"random peak": (0.1, 0.5, 0.2), "lung centre": (0.3, 0.2, 0.9),
             "mean mask": (0.6, 0.4, 0.1)}
    ms = {}
    for k, c in enumerate(classes):
        for b in GB.BASELINES:
            ms[b, "pointing game", c] = Measure(np.array([means[b][k]]), rng.random((1, B)), {})
        ms["UniChest", "pointing game", c] = Measure(rng.random(seeds), rng.random((seeds, B)), {})
    ms["UniChest", "pointing game", "macro"] = Measure(np.zeros(seeds), np.zeros((seeds, B)), {})
    info = dict(classes=classes, flagged=["c"], source="x", seeds=[0, 1])
    diffs, best = GM.strongest_baseline(ms, info, "pointing game")
    assert best == {"a": "mean mask", "b": "random peak", "c": "lung centre"}
    for c in classes:
        ref = ms["UniChest", "pointing game", c].points - means[best[c]][classes.index(c)]
        assert np.allclose(diffs[c].points, ref)
        assert diffs[c].reps.shape == (seeds, B)
    assert np.allclose(diffs["macro"].points, (diffs["a"].points + diffs["b"].points) / 2)
    assert np.allclose(diffs["macro"].reps, (diffs["a"].reps + diffs["b"].reps) / 2)
    with pytest.raises(ValueError, match="metric"):
        GM.strongest_baseline(ms, info, "IoU")


# ---- end to end at smoke -----------------------------------------------------------------------
@pytest.mark.slow
def test_table_runs_end_to_end_at_smoke_and_differences_are_paired():
    cfg = resolve("smoke", cache_dir=str(ROOT / ".cache" / "unichest"))
    t = GM.grounding_baseline_table(cfg, progress=False)
    assert list(t.columns) == list(GM.COLUMNS)
    strongest = f"UniChest − {GM.STRONGEST}"
    methods = (["UniChest", *GB.BASELINES] + [f"UniChest − {b}" for b in GB.BASELINES]
               + [strongest])
    for (cls, metric), d in t.groupby(["class", "metric"]):
        assert d["method"].tolist() == methods, (cls, metric)
        s = d.set_index("method")
        for b in GB.BASELINES:
            assert s.loc[f"UniChest − {b}", "mean"] == pytest.approx(
                s.loc["UniChest", "mean"] - s.loc[b, "mean"])
        if cls != "macro":  # against the baseline with the best mean on this class
            best = s.loc[list(GB.BASELINES), "mean"].astype(float).idxmax()
            assert s.loc[strongest, "against"] == best
            assert s.loc[strongest, "mean"] == pytest.approx(
                s.loc["UniChest", "mean"] - s.loc[best, "mean"])
    scores = t[t["kind"] == "score"]
    assert scores["mean"].between(0, 1).all()
    ok = t[~t["flagged"]]
    assert ok["lo"].notna().all() and t.loc[t["flagged"], "lo"].isna().all()
    assert (ok["lo"] <= ok["mean"] + 1e-12).all() and (ok["mean"] <= ok["hi"] + 1e-12).all()
    flagged = set(t.loc[t["flagged"], "class"])
    assert all(n < 2 for n in t.loc[t["flagged"], "n"])  # MIN_POS at smoke
    lesions = t[(t["metric"] == "Dice") & (t["method"] == "UniChest")].set_index("class")["n"]
    assert lesions["macro"] == lesions.drop(["macro", *flagged]).sum()
    macro = t[(t["class"] == "macro")].set_index(["metric", "method"])
    assert macro.loc[("Dice", "random peak"), "threshold"] == "0.00"
    assert macro.loc[("Dice", "UniChest"), "n_seeds"] == 2
    assert macro.loc[("pointing game", "mean mask"), "n_seeds"] == 1
    assert set(t.loc[t["kind"] == "difference", "verdict"]) <= {"holds", "contradicted",
                                                                 "inconclusive"}
    print(macro[["mean", "lo", "hi", "threshold"]].round(3).to_string())
    # the macro strongest-baseline row averages the kept classes' own differences
    per_class = t[(t["method"] == strongest) & (t["metric"] == "pointing game")
                  & (t["class"] != "macro") & ~t["flagged"]]
    assert macro.loc[("pointing game", strongest), "mean"] == pytest.approx(
        per_class["mean"].mean())
    # the ledger's claim "grounding beats the strongest baseline" is that macro difference
    from unichest_lib.evidence import claims

    summ = claims.grounding_vs_baselines(cfg, progress=False).summary()
    row = macro.loc[("pointing game", strongest)]
    assert summ["mean"] == pytest.approx(row["mean"])
    assert summ["verdict"] == row["verdict"]
