"""unichest_lib.evaluation.stats against slow, obvious references (loops) and constructed cases."""

import math
import statistics
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats as st
from sklearn.metrics import roc_auc_score

from unichest_lib.evaluation.stats import (
    VERDICTS, bca_ci, cluster_weights, delong, macro_auc_boot, min_detectable_effect,
    paired_bootstrap, percentile_ci, pooled_interval, seed_interval, summarise, verdict,
    weighted_auc,
)

N01 = NormalDist()


# --------------------------------------------------------------------------- references
def _slow_auc(y, s, w):
    """Double loop over (positive, negative) pairs, weights multiplied."""
    num = wp = wn = 0.0
    for i in range(len(y)):
        if y[i] == 1:
            wp += w[i]
        else:
            wn += w[i]
    if wp == 0 or wn == 0:
        return float("nan")
    for i in range(len(y)):
        if y[i] != 1:
            continue
        for j in range(len(y)):
            if y[j] != 0:
                continue
            if s[i] > s[j]:
                num += w[i] * w[j]
            elif s[i] == s[j]:
                num += 0.5 * w[i] * w[j]
    return num / (wp * wn)


def _slow_percentile(x, q):
    """Linear interpolation between order statistics (numpy's default), q in [0, 1]."""
    x = sorted(x)
    h = (len(x) - 1) * q
    k = math.floor(h)
    if k + 1 >= len(x):
        return x[-1]
    return x[k] + (h - k) * (x[k + 1] - x[k])


def _slow_bca(point, boot, jack, alpha):
    """Efron & Tibshirani (1993) eqs. 14.10, 14.14, 14.15, written out with loops."""
    below = 0
    for b in boot:
        if b < point:
            below += 1
    z0 = N01.inv_cdf(below / len(boot))
    jbar = sum(jack) / len(jack)
    s2 = s3 = 0.0
    for t in jack:
        s2 += (jbar - t) ** 2
        s3 += (jbar - t) ** 3
    a = s3 / (6.0 * s2 ** 1.5)
    out = []
    for q in (alpha / 2, 1 - alpha / 2):
        zq = N01.inv_cdf(q)
        level = N01.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq)))
        out.append(_slow_percentile(boot, level))
    return tuple(out)


def _slow_delong(y, sa, sb):
    """Placement values psi(x_i, y_j) by an O(m n) loop; DeLong's structural components."""
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos), len(neg)

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = np.zeros((2, m))
    v01 = np.zeros((2, n))
    for r, s in enumerate((sa, sb)):
        for ii, i in enumerate(pos):
            for jj, j in enumerate(neg):
                p = psi(s[i], s[j])
                v10[r, ii] += p / n
                v01[r, jj] += p / m
    auc = v10.mean(axis=1)
    s10 = np.zeros((2, 2))
    s01 = np.zeros((2, 2))
    for r in range(2):
        for q in range(2):
            s10[r, q] = sum((v10[r, i] - auc[r]) * (v10[q, i] - auc[q]) for i in range(m)) / (m - 1)
            s01[r, q] = sum((v01[r, j] - auc[r]) * (v01[q, j] - auc[q]) for j in range(n)) / (n - 1)
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    diff = auc[1] - auc[0]
    z = diff / math.sqrt(var)
    return dict(auc_a=auc[0], auc_b=auc[1], diff=diff, se=math.sqrt(var), z=z,
                p=2 * (1 - N01.cdf(abs(z))))


def _expanded_auc(y, s, w):
    """AUC of the sample with image i repeated w_i times (integer weights), by scikit-learn."""
    rep = np.asarray(w).astype(int)
    yy, ss = np.repeat(y, rep), np.repeat(s, rep)
    if yy.size == 0 or yy.min() == yy.max():
        return float("nan")
    return roc_auc_score(yy, ss)


def _data(seed, n=60, c=3, p_missing=0.15, n_pat=25):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.35).astype(float)
    s = np.round(rng.normal(size=(n, c)) + y, 1)          # rounding: ties
    y[rng.random((n, c)) < p_missing] = np.nan
    groups = rng.integers(0, n_pat, n)
    return y, s, groups


# --------------------------------------------------------------------------- weighted AUC
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_auc_matches_double_loop(seed):
    rng = np.random.default_rng(seed)
    n = 40
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=n), 1)
    w = rng.exponential(size=(6, n))
    w[:, :5] = 0.0                                         # zero weights allowed
    w[1] = rng.integers(0, 3, n)                           # bootstrap-like multiplicities
    got = weighted_auc(y, s, w)
    ref = [_slow_auc(y, s, row) for row in w]
    assert got.shape == (6,)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_weighted_auc_unit_and_integer_weights_match_sklearn():
    rng = np.random.default_rng(3)
    n = 200
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=n) + y, 1)
    assert weighted_auc(y, s, np.ones((1, n)))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert weighted_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    w = rng.integers(0, 4, (5, n)).astype(float)
    got = weighted_auc(y, s, w)
    for b in range(5):
        assert got[b] == pytest.approx(_expanded_auc(y, s, w[b]), abs=1e-12)
    np.testing.assert_allclose(weighted_auc(y, s, 3.5 * w), got, rtol=1e-12)   # scale-free


def test_weighted_auc_nan_when_a_side_has_no_weight_and_checks_inputs():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.2, 0.5, 0.1])
    w = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]], float)
    got = weighted_auc(y, s, w)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert got[2] == pytest.approx(0.75) and got[3] == pytest.approx(1.0)
    assert isinstance(weighted_auc(y, s, np.ones(4)), float)
    with pytest.raises(ValueError):
        weighted_auc(y, s, -np.ones((1, 4)))
    with pytest.raises(ValueError):
        weighted_auc(y, s, np.ones((1, 3)))
    with pytest.raises(ValueError):
        weighted_auc(np.array([0, 2, 1, 0]), s)


# --------------------------------------------------------------------------- cluster weights
def test_cluster_weights_equal_within_patient_and_counts_sum_to_patients():
    groups = np.array(["p3", "p1", "p3", "p2", "p1", "p3", "p9"])
    w = cluster_weights(groups, 500, 7)
    assert w.shape == (500, 7) and w.dtype == np.float64
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        assert (w[:, idx] == w[:, idx[:1]]).all()
    first = [np.flatnonzero(groups == g)[0] for g in np.unique(groups)]
    np.testing.assert_array_equal(w[:, first].sum(axis=1), 4)          # 4 patients drawn
    assert abs(w[:, first].mean() - 1.0) < 0.05                        # equal probabilities
    np.testing.assert_array_equal(w, cluster_weights(groups, 500, np.random.default_rng(7)))
    assert not np.array_equal(w, cluster_weights(groups, 500, 8))


def test_cluster_weights_one_image_per_patient_sum_to_n_patients():
    w = cluster_weights(np.arange(30), 200, 0)
    np.testing.assert_array_equal(w.sum(axis=1), 30)
    assert (w == np.round(w)).all() and w.min() >= 0
    assert (w == 0).any(axis=1).all()                 # with replacement: someone is left out


# --------------------------------------------------------------------------- macro bootstrap
@pytest.mark.parametrize("seed", [0, 1])
def test_macro_auc_boot_matches_loop_over_replicates(seed):
    y, s, groups = _data(seed)
    n_boot = 15
    r = macro_auc_boot(y, s, None, groups, n_boot=n_boot, seed=seed, min_pos=3)
    w = cluster_weights(groups, n_boot, seed)        # same draws as the function uses
    mask = ~np.isnan(y)
    kept = list(r["classes_kept"])
    assert kept == [j for j in range(3) if min(np.nansum(y[:, j]), np.sum(y[:, j] == 0)) >= 3]
    point = np.mean([roc_auc_score(y[mask[:, j], j], s[mask[:, j], j]) for j in kept])
    assert r["point"] == pytest.approx(point, abs=1e-12)
    for b in range(n_boot):
        vals = [_expanded_auc(y[mask[:, j], j], s[mask[:, j], j], w[b, mask[:, j]]) for j in kept]
        vals = [v for v in vals if not np.isnan(v)]
        ref = np.mean(vals) if vals else np.nan
        assert r["boot"][b] == pytest.approx(ref, abs=1e-12, nan_ok=True)
    np.testing.assert_array_equal(r["n"], mask.sum(axis=0))
    np.testing.assert_array_equal(r["n_pos"], np.nansum(y, axis=0))


def test_macro_auc_boot_flags_a_class_with_two_positives():
    y, s, groups = _data(5, n=80, p_missing=0.0)
    y[:, 1] = 0
    y[[3, 40], 1] = 1
    r = macro_auc_boot(y, s, None, groups, n_boot=50)
    assert list(r["flagged"]) == [1] and list(r["classes_kept"]) == [0, 2]
    assert r["n_pos"][1] == 2
    assert np.isnan(r["boot_class"][1]).all()
    assert r["auc"][1] == pytest.approx(roc_auc_score(y[:, 1], s[:, 1]))   # reported, not used
    assert r["point"] == pytest.approx(
        np.mean([roc_auc_score(y[:, j], s[:, j]) for j in (0, 2)]), abs=1e-12)
    r2 = macro_auc_boot(y, s, None, groups, n_boot=50, min_pos=2)
    assert list(r2["flagged"]) == [] and r2["point"] != r["point"]
    y[:, 2] = 1
    y[[1, 2, 3], 2] = 0                                    # only 3 negatives: flagged too
    r4 = macro_auc_boot(y, s, None, groups, n_boot=10)
    assert list(r4["flagged"]) == [1, 2] and list(r4["classes_kept"]) == [0]
    r3 = macro_auc_boot(y, s, None, groups, n_boot=10, min_pos=1000)
    assert np.isnan(r3["point"]) and np.isnan(r3["boot"]).all() and len(r3["flagged"]) == 3


def test_masked_entries_do_not_change_the_result():
    rng = np.random.default_rng(11)
    y, s, groups = _data(11, n=90, p_missing=0.0)
    mask = rng.random(y.shape) > 0.3
    r = macro_auc_boot(y, s, mask, groups, n_boot=100, seed=4)
    y2, s2 = y.copy(), s.copy()
    y2[~mask] = 1 - y2[~mask]
    s2[~mask] = rng.normal(size=(~mask).sum()) * 10
    r2 = macro_auc_boot(y2, s2, mask, groups, n_boot=100, seed=4)
    assert r2["point"] == r["point"]
    np.testing.assert_array_equal(r2["boot"], r["boot"])
    # the same with the missing entries written as NaN labels and mask=None
    y3 = np.where(mask, y, np.nan)
    r3 = macro_auc_boot(y3, s2, None, groups, n_boot=100, seed=4)
    np.testing.assert_array_equal(r3["boot"], r["boot"])
    # and the mask is not ignored: unmasking changes the answer
    assert macro_auc_boot(y2, s2, None, groups, n_boot=100, seed=4)["point"] != r["point"]


def test_several_score_arrays_share_resamples():
    y, s, groups = _data(2, n=100)
    s_b = s + np.random.default_rng(0).normal(size=s.shape)
    one_a = macro_auc_boot(y, s, None, groups, n_boot=80, seed=9, min_pos=3)
    one_b = macro_auc_boot(y, s_b, None, groups, n_boot=80, seed=9, min_pos=3)
    both = macro_auc_boot(y, (s, s_b), None, groups, n_boot=80, seed=9, min_pos=3)
    assert both["boot"].shape == (2, 80) and both["point"].shape == (2,)
    np.testing.assert_array_equal(both["boot"][0], one_a["boot"])
    np.testing.assert_array_equal(both["boot"][1], one_b["boot"])
    assert both["point"][1] == one_b["point"]


def test_patient_clustering_widens_the_interval():
    """5 identical copies of each patient's image: resampling images pretends to 5x the data."""
    rng = np.random.default_rng(0)
    n_pat = 120
    y1 = (rng.random(n_pat) < 0.4).astype(float)
    s1 = rng.normal(size=n_pat) + 1.2 * y1
    y = np.repeat(y1, 5)[:, None]
    s = np.repeat(s1, 5)[:, None]
    pid = np.repeat(np.arange(n_pat), 5)
    clu = macro_auc_boot(y, s, None, pid, n_boot=600, seed=1)
    img = macro_auc_boot(y, s, None, np.arange(y.shape[0]), n_boot=600, seed=1)
    assert clu["point"] == img["point"] == pytest.approx(roc_auc_score(y1, s1))
    w_clu = np.subtract(*percentile_ci(clu["boot"])[::-1])
    w_img = np.subtract(*percentile_ci(img["boot"])[::-1])
    ratio = w_clu / w_img
    assert 1.7 < ratio < 2.9, ratio                     # about sqrt(5) = 2.24
    # the cluster bootstrap of the copies equals the image bootstrap of one copy each
    one = macro_auc_boot(y1, s1, None, None, n_boot=600, seed=1)
    np.testing.assert_allclose(clu["boot"], one["boot"], atol=1e-12)


def test_jackknife_is_leave_one_patient_out():
    y, s, groups = _data(4, n=50, n_pat=12)
    r = macro_auc_boot(y, s, None, groups, n_boot=5, min_pos=3, jackknife=True)
    pats = list(dict.fromkeys(groups.tolist()))          # order of first appearance
    assert r["jack"].shape == (len(pats),)
    for k, p in enumerate(pats):
        keep = groups != p
        sub = macro_auc_boot(y[keep], s[keep], None, groups[keep], n_boot=2, min_pos=0)
        vals = [sub["auc"][j] for j in r["classes_kept"] if not np.isnan(sub["auc"][j])]
        assert r["jack"][k] == pytest.approx(np.mean(vals), abs=1e-12)


def test_macro_auc_boot_replicates_scatter_around_the_point_estimate():
    """At 1,200 images and 14 classes (the scale of a tutorial test split) the patient
    bootstrap gives finite replicates in [0, 1] centred on the point macro AUC; its speed is
    measured by ``bench/`` scripts, not here."""
    rng = np.random.default_rng(0)
    n, c = 1200, 14
    y = (rng.random((n, c)) < 0.15).astype(float)
    s = rng.normal(size=(n, c)) + y
    y[rng.random((n, c)) < 0.1] = np.nan
    groups = rng.integers(0, 600, n)
    r = macro_auc_boot(y, s, None, groups, n_boot=1000)
    boot = r["boot"]
    assert boot.shape == (1000,) and np.isfinite(boot).all()
    assert ((boot >= 0) & (boot <= 1)).all()
    assert abs(boot.mean() - r["point"]) < 0.01 and 0.001 < boot.std() < 0.05


# --------------------------------------------------------------------------- intervals
def test_percentile_ci_matches_order_statistics_and_ignores_nan():
    rng = np.random.default_rng(0)
    b = rng.normal(size=999)
    lo, hi = percentile_ci(b, 0.1)
    assert lo == pytest.approx(_slow_percentile(b, 0.05))
    assert hi == pytest.approx(_slow_percentile(b, 0.95))
    assert percentile_ci(np.r_[b, np.nan, np.nan], 0.1) == (lo, hi)
    assert all(np.isnan(percentile_ci(np.full(5, np.nan))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bca_matches_textbook_formulas(seed):
    rng = np.random.default_rng(seed)
    x = rng.exponential(size=40)                        # skewed: bias and acceleration != 0
    stat = np.var
    boot = np.array([stat(x[rng.integers(0, 40, 40)]) for _ in range(1500)])
    jack = np.array([stat(np.delete(x, i)) for i in range(40)])
    got = bca_ci(stat(x), boot, jack, 0.05)
    ref = _slow_bca(stat(x), list(boot), list(jack), 0.05)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    assert got != pytest.approx(percentile_ci(boot))    # the corrections do something here


def test_bca_counts_only_replicates_strictly_below_the_point():
    rng = np.random.default_rng(4)
    boot = np.r_[np.round(rng.normal(0.1, 1, 300), 1), np.zeros(60)]   # many ties at 0
    jack = rng.normal(size=30) ** 3
    got = bca_ci(0.0, boot, jack, 0.1)
    np.testing.assert_allclose(got, _slow_bca(0.0, list(boot), list(jack), 0.1), rtol=1e-10)


def test_bca_close_to_percentile_for_symmetric_unbiased_statistic():
    rng = np.random.default_rng(1)
    z = rng.normal(size=100)
    x = np.r_[z, -z]                                    # symmetric: acceleration 0, mean 0
    boot = np.array([x[rng.integers(0, 200, 200)].mean() for _ in range(4000)])
    jack = np.array([np.delete(x, i).mean() for i in range(200)])
    lo, hi = bca_ci(x.mean(), boot, jack)
    plo, phi = percentile_ci(boot)
    width = phi - plo
    assert abs(lo - plo) < 0.05 * width and abs(hi - phi) < 0.05 * width


def test_bca_falls_back_to_percentile_when_degenerate():
    boot = np.linspace(1, 2, 101)
    jack = np.linspace(0, 1, 10)
    assert bca_ci(0.5, boot, jack) == percentile_ci(boot)          # all replicates above
    assert bca_ci(1.5, boot, np.ones(10)) == percentile_ci(boot)   # constant jackknife
    assert bca_ci(1.5, boot, jack) != percentile_ci(boot)


# --------------------------------------------------------------------------- paired comparison
def test_paired_bootstrap_against_references():
    y, s_a, groups = _data(6, n=150, n_pat=60)
    rng = np.random.default_rng(6)
    s_b = s_a + rng.normal(scale=0.7, size=s_a.shape)
    r = paired_bootstrap(y, s_a, s_b, None, groups, n_boot=300, seed=2, alpha=0.1, min_pos=3)
    both = macro_auc_boot(y, [s_a, s_b], None, groups, n_boot=300, seed=2, min_pos=3)
    mask = ~np.isnan(y)
    aucs = [[roc_auc_score(y[mask[:, j], j], sc[mask[:, j], j]) for j in both["classes_kept"]]
            for sc in (s_a, s_b)]
    assert r["diff"] == pytest.approx(np.mean(aucs[1]) - np.mean(aucs[0]), abs=1e-12)
    d = [both["boot"][1][b] - both["boot"][0][b] for b in range(300)]
    le = sum(1 for v in d if v <= 0) / len(d)
    ge = sum(1 for v in d if v >= 0) / len(d)
    assert r["p"] == pytest.approx(min(1.0, 2 * min(le, ge)))
    assert r["se"] == pytest.approx(statistics.stdev(d))
    ref_ci = (_slow_percentile(d, 0.05), _slow_percentile(d, 0.95))
    assert (r["lo"], r["hi"]) == pytest.approx(ref_ci)
    assert r["n_boot"] == 300


def test_paired_bootstrap_constructed_cases():
    rng = np.random.default_rng(8)
    n = 300
    y = (rng.random((n, 2)) < 0.4).astype(float)
    groups = rng.integers(0, 150, n)
    weak = rng.normal(size=(n, 2)) + 0.3 * y
    strong = rng.normal(size=(n, 2)) + 2.0 * y
    same = paired_bootstrap(y, weak, weak, None, groups, n_boot=200)
    assert same["diff"] == 0 and same["se"] == 0 and same["p"] == 1.0
    assert same["lo"] == same["hi"] == 0
    win = paired_bootstrap(y, weak, strong, None, groups, n_boot=200)
    assert win["diff"] > 0.2 and win["lo"] > 0 and win["p"] < 0.01
    assert verdict(win["lo"], win["hi"]) == "holds"
    loss = paired_bootstrap(y, strong, weak, None, groups, n_boot=200)
    assert loss["diff"] == pytest.approx(-win["diff"]) and loss["hi"] < 0
    assert verdict(loss["lo"], loss["hi"]) == "contradicted"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_delong_matches_slow_placement_values(seed):
    rng = np.random.default_rng(seed)
    n = 70
    y = rng.integers(0, 2, n)
    sa = np.round(rng.normal(size=n) + y, 1)            # ties within and across classes
    sb = np.round(0.5 * sa + rng.normal(size=n) + 0.5 * y, 1)
    got = delong(y, sa, sb)
    ref = _slow_delong(y, sa, sb)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, rel=1e-9, abs=1e-12), key
    assert got["diff"] == pytest.approx(roc_auc_score(y, sb) - roc_auc_score(y, sa), abs=1e-12)
    half = st.norm.ppf(0.975) * ref["se"]
    assert (got["lo"], got["hi"]) == pytest.approx((ref["diff"] - half, ref["diff"] + half))
    swapped = delong(y, sb, sa)
    assert swapped["diff"] == pytest.approx(-got["diff"])
    assert swapped["p"] == pytest.approx(got["p"])


def test_delong_edge_cases_and_agreement_with_bootstrap():
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 2, n)
    sa = rng.normal(size=n) + y
    same = delong(y, sa, sa)
    assert same["diff"] == 0 and same["se"] == 0 and same["p"] == 1.0
    assert all(np.isnan(v) for v in delong(np.zeros(5), np.arange(5), np.arange(5)).values())
    sb = sa + rng.normal(size=n)
    d = delong(y, sa, sb)
    b = paired_bootstrap(y, sa, sb, None, None, n_boot=1500, seed=0)
    assert b["diff"] == pytest.approx(d["diff"], abs=1e-12)
    assert 0.85 < b["se"] / d["se"] < 1.15


# --------------------------------------------------------------------------- seeds
def test_seed_interval_against_formula():
    v = [0.81, 0.79, 0.84, 0.80, 0.82]
    r = seed_interval(v, alpha=0.1)
    sd = statistics.stdev(v)
    half = st.t.ppf(0.95, 4) * sd / math.sqrt(5)
    assert r["mean"] == pytest.approx(statistics.mean(v)) and r["sd"] == pytest.approx(sd)
    assert r["n"] == 5 and r["half"] == pytest.approx(half)
    assert (r["lo"], r["hi"]) == pytest.approx((r["mean"] - half, r["mean"] + half))
    one = seed_interval([0.8])
    assert one["mean"] == 0.8 and one["n"] == 1
    # one poor seed of three: the t-interval passes 1; bounded, it stops at the metric's range
    wide = [0.70, 0.93, 0.95]
    free, cut = seed_interval(wide), seed_interval(wide, bounds=(0.0, 1.0))
    assert free["hi"] > 1.0 and cut["hi"] == 1.0
    assert cut["lo"] == pytest.approx(free["lo"]) and cut["half"] == pytest.approx(free["half"])
    assert cut["mean"] == pytest.approx(free["mean"])
    low = seed_interval([0.01, 0.02, 0.30], bounds=(0.0, 1.0))
    assert low["lo"] == 0.0 and low["hi"] < 1.0
    assert all(np.isnan(one[k]) for k in ("sd", "lo", "hi", "half"))


def test_pooled_interval_against_loops():
    rng = np.random.default_rng(2)
    n_seeds, n_boot = 4, 300
    points = 0.8 + 0.01 * rng.normal(size=n_seeds)
    boot = (points[:, None] + 0.02 * rng.normal(size=(1, n_boot))      # shared test-set noise
            + 0.003 * rng.normal(size=(n_seeds, n_boot)))
    r = pooled_interval(points, boot, alpha=0.05)
    rep = [sum(boot[k, b] for k in range(n_seeds)) / n_seeds for b in range(n_boot)]
    se_test = statistics.stdev(rep)
    se_seed = statistics.stdev(points) / math.sqrt(n_seeds)
    se = math.sqrt(se_seed ** 2 + se_test ** 2)
    z = N01.inv_cdf(0.975)
    assert r["se_test"] == pytest.approx(se_test) and r["se_seed"] == pytest.approx(se_seed)
    assert r["se"] == pytest.approx(se) and r["n_seeds"] == n_seeds
    mean = statistics.mean(points)
    assert (r["mean"], r["lo"], r["hi"]) == pytest.approx((mean, mean - z * se, mean + z * se))
    one = pooled_interval(points[:1], boot[:1])
    assert one["se_seed"] == 0 and one["se"] == pytest.approx(statistics.stdev(boot[0]))
    with pytest.raises(ValueError):
        pooled_interval(points, boot[:3])


def test_min_detectable_effect():
    assert min_detectable_effect(1.0) == pytest.approx(N01.inv_cdf(0.975) + N01.inv_cdf(0.8))
    assert min_detectable_effect(0.01, alpha=0.1, power=0.9) == pytest.approx(
        0.01 * (N01.inv_cdf(0.95) + N01.inv_cdf(0.9)))
    assert np.isnan(min_detectable_effect(float("nan")))
    np.testing.assert_allclose(min_detectable_effect(np.array([0.0, 2.0])), [0.0, 2 * 2.801585],
                               rtol=1e-6)


# --------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("lo, hi, kind, margin, expected", [
    (0.01, 0.05, "greater", 0.0, "holds"),
    (-0.05, -0.01, "greater", 0.0, "contradicted"),
    (-0.01, 0.03, "greater", 0.0, "inconclusive"),
    (0.01, 0.05, "greater", 0.02, "inconclusive"),
    (0.0, 0.05, "greater", 0.0, "inconclusive"),           # touching the margin
    (-0.05, -0.01, "less", 0.0, "holds"),
    (0.01, 0.05, "less", 0.0, "contradicted"),
    (-0.02, 0.02, "less", 0.0, "inconclusive"),
    (-0.05, -0.01, "less", -0.02, "inconclusive"),
    (-0.005, 0.008, "equivalent", 0.01, "holds"),
    (0.02, 0.04, "equivalent", 0.01, "contradicted"),
    (-0.04, -0.01, "equivalent", 0.01, "contradicted"),
    (-0.005, 0.03, "equivalent", 0.01, "inconclusive"),
    (-0.03, 0.03, "equivalent", 0.01, "inconclusive"),
    (float("nan"), 0.05, "greater", 0.0, "inconclusive"),
    (0.01, float("nan"), "less", 0.0, "inconclusive"),
    (float("nan"), float("nan"), "equivalent", 0.01, "inconclusive"),
])
def test_verdict_cases(lo, hi, kind, margin, expected):
    assert verdict(lo, hi, kind=kind, margin=margin) == expected
    assert expected in VERDICTS


def test_verdict_rejects_bad_arguments():
    assert VERDICTS == ("holds", "contradicted", "inconclusive")
    with pytest.raises(ValueError):
        verdict(-0.1, 0.1, kind="equivalent")
    with pytest.raises(ValueError):
        verdict(0.0, 0.1, kind="bigger")
    with pytest.raises(ValueError):
        verdict(0.2, 0.1)


def test_summarise_with_and_without_bootstrap():
    points = [0.012, 0.018, 0.015]
    plain = summarise(points)
    si = seed_interval(points)
    assert plain["interval"] == "seed" and plain["n_seeds"] == 3
    assert (plain["lo"], plain["hi"]) == (si["lo"], si["hi"])
    assert (plain["seed_lo"], plain["seed_hi"]) == (si["lo"], si["hi"])
    assert plain["mde"] == pytest.approx(min_detectable_effect(si["sd"] / math.sqrt(3)))
    assert plain["verdict"] == verdict(si["lo"], si["hi"])
    rng = np.random.default_rng(0)
    boot = np.asarray(points)[:, None] + 0.01 * rng.normal(size=(1, 400))
    pooled = summarise(points, boot, kind="greater", margin=0.0)
    pi = pooled_interval(points, boot)
    assert pooled["interval"] == "pooled"
    assert (pooled["lo"], pooled["hi"], pooled["se"]) == (pi["lo"], pi["hi"], pi["se"])
    assert (pooled["seed_lo"], pooled["seed_hi"]) == (si["lo"], si["hi"])
    assert pooled["hi"] - pooled["lo"] > si["hi"] - si["lo"]     # test-set noise widens it
    assert pooled["mde"] == pytest.approx(min_detectable_effect(pi["se"]))
    assert plain["verdict"] == "holds" and pooled["verdict"] == "inconclusive"
    single = summarise([0.02])
    assert np.isnan(single["lo"]) and np.isnan(single["mde"])
    assert single["verdict"] == "inconclusive"
    single_b = summarise([0.02], boot[:1] + 0.005)
    assert single_b["se_seed"] == 0 and np.isfinite(single_b["lo"])
