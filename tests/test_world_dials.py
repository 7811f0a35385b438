"""The label-meaning dial (issue #14): P(label | image) differs by source.

At dial 0 a source's false negatives fall on random findings (and the labels are exactly those
of the world without the dial); at 1 on its least visible findings, at the same rate; single
dials are set apart from ``heterogeneity`` through ``cfg.dials`` and refused by name when bad.
"""

from __future__ import annotations

import numpy as np
import pytest

from unichest_lib import config as C
from unichest_lib.data.world import World
from unichest_lib.data.world import population as P
from unichest_lib.data.world import sources as S


def _setup(n=20000, f=3, fn=0.2, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random((n, f)) < 0.3
    jitter = rng.uniform(-1, 1, (n, f, 3)).astype(np.float32)
    noise = S.LabelNoise(false_negative=fn)
    return truth, jitter, noise, np.zeros(f), np.full(f, 0.3)


def test_conspicuity_is_a_rank_in_0_1_and_uniform():
    _, jitter, *_ = _setup()
    v = P.conspicuity(jitter)
    assert v.min() >= 0 and v.max() <= 1
    # the CDF of the triangular mean of two uniforms makes it uniform
    hist, _ = np.histogram(v, bins=10, range=(0, 1))
    assert np.allclose(hist / hist.sum(), 0.1, atol=0.01)
    # monotone in size and density
    j = np.zeros((3, 1, 3), np.float32)
    j[:, 0, 0] = j[:, 0, 1] = [-0.5, 0.0, 0.5]
    assert np.all(np.diff(P.conspicuity(j)[:, 0]) > 0)


def test_subtle_zero_reproduces_the_labels_without_the_dial():
    truth, jitter, noise, unc, prior = _setup()
    a = P.record_labels(np.random.default_rng(1), truth, noise, unc, prior)
    b = P.record_labels(np.random.default_rng(1), truth, noise, unc, prior, subtle=0.0,
                        visible=P.conspicuity(jitter))
    np.testing.assert_array_equal(a, b)


def test_subtle_one_misses_the_least_visible_findings_at_the_same_rate():
    truth, jitter, noise, unc, prior = _setup()
    vis = P.conspicuity(jitter)
    rand = P.record_labels(np.random.default_rng(1), truth, noise, unc, prior)
    sub = P.record_labels(np.random.default_rng(1), truth, noise, unc, prior, subtle=1.0,
                          visible=vis)
    miss_rand = (rand[truth] == 0).mean()
    miss_sub = (sub[truth] == 0).mean()
    assert abs(miss_rand - noise.false_negative) < 0.01
    assert abs(miss_sub - noise.false_negative) < 0.01  # the rate is the label-noise dial's
    missed = truth & (sub == 0)
    kept = truth & (sub == 1)
    assert vis[missed].max() < noise.false_negative <= vis[kept].min()
    # at random, visibility says nothing about a miss
    assert abs(vis[truth & (rand == 0)].mean() - vis[truth & (rand == 1)].mean()) < 0.02
    # a half-way dial: half of the misses follow the image
    half = P.record_labels(np.random.default_rng(1), truth, noise, unc, prior, subtle=0.5,
                           visible=vis)
    low = truth & (vis < noise.false_negative)
    assert 0.5 < (half[low] == 0).mean() < 0.7


def test_report_mined_sources_miss_subtle_findings_radiologist_labels_do_not(tmp_path):
    cfg = C.resolve("smoke", cache_dir=str(tmp_path))
    w = World(cfg)
    assert w.spec("chestxray14").meaning.subtle == 1.0 and w.spec("vindr").meaning.subtle == 0.0
    off = World(cfg.replace(dials=("label_meaning=0",)))
    assert off.spec("chestxray14").meaning.subtle == 0.0
    # only the labels move: truth and layout (so the pixels) are the same
    for s in ("chestxray14", "vindr"):
        a, b = w.population(s), off.population(s)
        np.testing.assert_array_equal(a.truth, b.truth)
        np.testing.assert_array_equal(a.jitter, b.jitter)
    np.testing.assert_array_equal(w.population("vindr").state, off.population("vindr").state)
    assert not np.array_equal(np.nan_to_num(w.population("chestxray14").state),
                              np.nan_to_num(off.population("chestxray14").state))
    # the other dials still follow heterogeneity
    assert w.dials == S.Dials() and off.dials == S.Dials(label_meaning=0.0)
    mix = S.dials(0.5, {"label_meaning": 1.0})
    assert (mix.acquisition, mix.label_prior, mix.label_meaning) == (0.5, 0.5, 1.0)


def test_report_labellers_define_lung_opacity_and_infiltration_broadly_at_dial_one(tmp_path):
    """The same consolidation is "lung opacity" to CheXpert and MIMIC, "infiltration" to
    ChestX-ray14 and neither to VinDr at label meaning 1; at 0 every source reads the class
    narrowly. The images (true findings) are the same at both levels."""
    cfg = C.resolve("smoke", n_per_source=6000, n_valid=0, n_test=0, cache_dir=str(tmp_path))
    on, off = World(cfg), World(cfg.replace(dials=("label_meaning=0",)))
    j = {c: P.FINDINGS.index(c) for c in ("lung opacity", "infiltration", "consolidation")}

    def called(world, source, cls):  # P(cls recorded | consolidation present, cls absent)
        p = world.population(source)
        only = p.truth[:, j["consolidation"]] & ~p.truth[:, j[cls]]
        return np.mean(p.state[only, j[cls]] == 1)

    for s, cls in (("chexpert", "lung opacity"), ("mimic", "lung opacity"),
                   ("chestxray14", "infiltration")):
        np.testing.assert_array_equal(on.population(s).truth, off.population(s).truth)
        assert called(on, s, cls) > 0.8 and called(off, s, cls) < 0.05, s
    assert called(on, "vindr", "lung opacity") < 0.05
    assert called(on, "vindr", "infiltration") < 0.05
    assert called(on, "chestxray14", "lung opacity") < 0.05  # not a broad class there


def test_narrow_prior_keeps_the_share_of_images_that_show_the_broad_class_at_the_real_rate():
    """Monte Carlo through draw_findings' copula against narrow_prior's integral."""
    prior = np.full(len(P.FINDINGS), 0.02, np.float32)
    prior[P.FINDINGS.index("lung opacity")] = 0.49
    kids = S.BROAD_DEFINITIONS["chexpert"]["lung opacity"]
    for k, v in zip(kids, (0.16, 0.07, 0.26, 0.02, 0.04)):
        prior[P.FINDINGS.index(k)] = v
    narrow = P.narrow_prior(prior, S.BROAD_DEFINITIONS["chexpert"], 1.0)
    assert 0.005 < narrow[P.FINDINGS.index("lung opacity")] < 0.49
    np.testing.assert_array_equal(np.delete(narrow, P.FINDINGS.index("lung opacity")),
                                  np.delete(prior, P.FINDINGS.index("lung opacity")))
    rng = np.random.default_rng(0)
    patient = P.draw_patients(rng, 200_000, 1.0)
    truth = P.draw_findings(rng, patient, narrow)
    cols = [P.FINDINGS.index(c) for c in ("lung opacity", *kids)]
    assert truth[:, cols].any(axis=1).mean() == pytest.approx(0.49, abs=0.006)
    np.testing.assert_array_equal(P.narrow_prior(prior, S.BROAD_DEFINITIONS["chexpert"], 0.0),
                                  prior)


@pytest.mark.parametrize("bad, words", [
    (("label_meaning=1.5",), "label_meaning = 1.5 must lie in [0, 1]"),
    (("meaning=0",), "NAME one of acquisition"),
    (("label_meaning=0", "label_meaning=1"), "sets 'label_meaning' twice"),
    (("label_meaning=x",), "is not a number"),
])
def test_bad_dials_are_refused_by_name(bad, words):
    with pytest.raises(C.ConfigError, match=__import__("re").escape(words)):
        C.resolve("smoke", dials=bad)
