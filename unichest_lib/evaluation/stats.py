"""Uncertainty for the reproduction's claims: patient-level bootstrap intervals of AUC-type
metrics, paired model comparisons, aggregation over training seeds, and a verdict rule.

- :func:`weighted_auc` evaluates the AUC under many weight vectors at once (one sort, cumulative
  sums, ties counted one half), which is what makes a 1000-replicate bootstrap cheap.
- :func:`cluster_weights` / :func:`macro_auc_boot` resample *patients*, not images: all images
  of a patient enter a replicate together, as the images of one patient are not independent.
  Several score arrays passed together share the same resamples, so their differences are
  paired (:func:`paired_bootstrap`).
- :func:`percentile_ci`, :func:`bca_ci` turn replicates into intervals (Efron & Tibshirani
  1993, ch. 13-14); :func:`delong` is the paired DeLong test for one binary class (DeLong,
  DeLong & Clarke-Pearson 1988) with the fast midrank algorithm of Sun & Xu (2014).
- :func:`seed_interval`, :func:`pooled_interval`, :func:`summarise` aggregate a metric over
  training seeds; :func:`min_detectable_effect` and :func:`verdict` say what an interval can
  and does support.

Classes with fewer than ``min_pos`` positives or negatives are *flagged* and left out of macro
means, and the result says which ones -- nothing is dropped silently.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = [
    "fmt_interval",
    "VERDICTS", "weighted_auc", "cluster_weights", "macro_auc_boot", "percentile_ci", "bca_ci",
    "paired_bootstrap", "delong", "seed_interval", "pooled_interval", "min_detectable_effect",
    "verdict", "summarise",
]

#: The possible outcomes of :func:`verdict`.
VERDICTS = ("holds", "contradicted", "inconclusive")

_CHUNK = 1 << 22  # elements of a (replicates, images) weight block evaluated at once


# --------------------------------------------------------------------------- weighted AUC
def _auc_prepare(y, s):
    """Sort the negatives once by score and place every positive among them.

    Returns (neg, pos, lo, hi): indices of the negatives in score order, indices of the
    positives, and for each positive the number of negatives scored below it (``lo``) and at
    or below it (``hi``); equal scores form one group, counted one half.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y has {y.size} entries but s has {s.size}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must hold only 0 and 1")
    if np.isnan(s).any():
        raise ValueError("s holds NaN")
    neg, pos = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    neg = neg[np.argsort(s[neg], kind="mergesort")]
    s_neg = s[neg]
    lo = np.searchsorted(s_neg, s[pos], side="left")
    hi = np.searchsorted(s_neg, s[pos], side="right")
    return neg, pos, lo, hi


def _auc_apply(prep, w):
    """AUCs (B,) of a prepared (y, s) under weights ``w`` (B, n_total)."""
    neg, pos, lo, hi = prep
    csum = np.zeros((w.shape[0], neg.size + 1))
    np.cumsum(w[:, neg], axis=1, out=csum[:, 1:])     # negative weight of the k lowest scores
    wp = w[:, pos]
    num = 0.5 * np.sum(wp * (csum[:, lo] + csum[:, hi]), axis=1)   # below + tie / 2
    w_pos, w_neg = wp.sum(axis=1), csum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((w_pos > 0) & (w_neg > 0), num / (w_pos * w_neg), np.nan)


def weighted_auc(y, s, w=None) -> np.ndarray:
    """AUCs under each row of weights ``w`` (B, n) -> (B,); NaN where a side has no weight.

    AUC_b = sum_{i pos, j neg} w_bi w_bj ([s_i > s_j] + [s_i == s_j] / 2) / (W_pos W_neg).
    One sort of the negatives, cumulative sums of their weights, each positive placed among
    them by binary search (equal scores form a group): O(B n) time and memory, no loop.
    ``w`` None (unit weights) or 1-D gives a float.
    """
    prep = _auc_prepare(y, s)
    n = prep[0].size + prep[1].size
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    one = w.ndim == 1
    w = np.atleast_2d(w)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"w has shape {w.shape}; expected (B, {n})")
    if (w < 0).any() or np.isnan(w).any():
        raise ValueError("w must be non-negative and finite")
    out = _auc_apply(prep, w)
    return float(out[0]) if one else out


# --------------------------------------------------------------------------- patient bootstrap
def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _patients(groups) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(list(groups), dtype=object), use_na_sentinel=False)
    return np.asarray(codes, dtype=np.intp), len(uniques)


def _cluster_counts(groups, n_boot: int, rng):
    inv, n_pat = _patients(groups)
    if n_pat == 0:
        raise ValueError("groups is empty")
    counts = _rng(rng).multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=int(n_boot))
    return counts.astype(np.float64), inv


def cluster_weights(groups, n_boot: int, rng=None) -> np.ndarray:
    """(n_boot, n) weights of a patient (cluster) bootstrap.

    Each replicate draws the unique patients with replacement (equal probability); every image
    of a patient gets that patient's count. ``rng``: a numpy Generator or an int seed.
    """
    counts, inv = _cluster_counts(groups, n_boot, rng)
    return counts[:, inv]


def _check_multi(y, s, mask, groups):
    y = np.asarray(y, dtype=np.float64)
    multi = isinstance(s, (list, tuple))
    scores = [np.asarray(a, dtype=np.float64) for a in (s if multi else [s])]
    if y.ndim == 1:
        y = y[:, None]
        scores = [a.reshape(-1, 1) for a in scores]
        mask = None if mask is None else np.asarray(mask).reshape(-1, 1)
    if y.ndim != 2 or any(a.shape != y.shape for a in scores):
        raise ValueError(f"y {y.shape} and every score array must be (n, c) of the same shape")
    mask = ~np.isnan(y) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != y.shape:
        raise ValueError(f"mask has shape {mask.shape}; expected {y.shape}")
    mask = mask & ~np.isnan(y)
    if not np.isin(np.where(mask, y, 0.0), (0.0, 1.0)).all():
        raise ValueError("y must hold only 0 and 1 (NaN or mask=False for missing labels)")
    if any(np.isnan(a[mask]).any() for a in scores):
        raise ValueError("scores hold NaN at observed entries")
    if len(groups) != y.shape[0]:
        raise ValueError(f"groups has {len(groups)} entries; expected {y.shape[0]}")
    return y, scores, mask, multi


def _nanmean_rows(a, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _per_class_blocks(y, scores, mask, kept, blocks):
    """Per-class AUCs (k, len(kept), B) over weight blocks (b, n) yielded by ``blocks``."""
    preps = {}
    for j in kept:
        obs = np.flatnonzero(mask[:, j])
        for i, a in enumerate(scores):
            neg, pos, lo, hi = _auc_prepare(y[obs, j], a[obs, j])
            preps[i, j] = (obs[neg], obs[pos], lo, hi)   # index straight into full weights
    parts = []
    for w in blocks:
        out = np.empty((len(scores), len(kept), w.shape[0]))
        for jj, j in enumerate(kept):
            for i in range(len(scores)):
                out[i, jj] = _auc_apply(preps[i, j], w)
        parts.append(out)
    return np.concatenate(parts, axis=2) if parts else np.empty((len(scores), len(kept), 0))


def macro_auc_boot(y, s, mask=None, groups=None, *, n_boot: int = 1000, seed=0,
                   min_pos: int = 5, jackknife: bool = False) -> dict[str, Any]:
    """Macro AUC with a patient-level bootstrap.

    ``y`` (n, c) 0/1 (NaN = missing), ``s`` (n, c) scores or a list/tuple of several such
    arrays (same resamples for all: paired), ``mask`` (n, c) observed entries (None:
    ``~isnan(y)``), ``groups`` (n,) patient ids (None: every image its own patient).
    Returns ``point`` (macro AUC over kept classes), ``boot`` (n_boot,) replicate macro AUCs
    (nanmean over kept classes), ``auc`` (c,) per-class point AUCs (flagged classes too,
    NaN when undefined), ``boot_class``
    (c, n_boot) (NaN rows for flagged classes), ``classes_kept``, ``flagged`` (fewer than
    ``min_pos`` positives or negatives; excluded), ``n_pos``, ``n``; with several score
    arrays ``point``/``auc``/``boot``/``boot_class`` gain a leading axis k. With
    ``jackknife=True`` also ``jack``: leave-one-patient-out macro AUCs, patients in order of
    first appearance (for :func:`bca_ci`).
    """
    if groups is None:
        groups = np.arange(np.shape(y)[0])
    y, scores, mask, multi = _check_multi(y, s, mask, groups)
    n_cls = y.shape[1]
    n_obs = mask.sum(axis=0)
    n_pos = np.where(mask, y == 1, False).sum(axis=0)
    bad = (n_pos < min_pos) | (n_obs - n_pos < min_pos)
    kept, flagged = np.flatnonzero(~bad), np.flatnonzero(bad)
    k = len(scores)

    n = y.shape[0]
    step = max(1, _CHUNK // max(n, 1))
    defined = np.flatnonzero((n_pos > 0) & (n_obs > n_pos))   # flagged ones are reported too
    auc = np.full((k, n_cls), np.nan)
    auc[:, defined] = _per_class_blocks(y, scores, mask, defined, [np.ones((1, n))])[:, :, 0]
    counts, inv = _cluster_counts(groups, n_boot, seed)
    blocks = (counts[b:b + step][:, inv] for b in range(0, int(n_boot), step))
    boot_class = np.full((k, n_cls, int(n_boot)), np.nan)
    boot_class[:, kept] = _per_class_blocks(y, scores, mask, kept, blocks)

    macro = (lambda a: _nanmean_rows(a[:, kept], axis=1)) if kept.size else \
        (lambda a: np.full((a.shape[0],) + a.shape[2:], np.nan))
    out = dict(point=macro(auc), boot=macro(boot_class), auc=auc, boot_class=boot_class,
               classes_kept=kept, flagged=flagged, n_pos=n_pos, n=n_obs, min_pos=min_pos)
    if jackknife:
        n_pat = int(inv.max()) + 1
        jblocks = ((inv[None, :] != np.arange(p, min(p + step, n_pat))[:, None]).astype(float)
                   for p in range(0, n_pat, step))
        jc = np.full((k, n_cls, n_pat), np.nan)
        jc[:, kept] = _per_class_blocks(y, scores, mask, kept, jblocks)
        out["jack"] = macro(jc)
    if not multi:
        for key in ("point", "boot", "auc", "boot_class", "jack"):
            if key in out:
                out[key] = out[key][0]
        out["point"] = float(out["point"])
    return out


# --------------------------------------------------------------------------- intervals
def percentile_ci(boot, alpha: float = 0.05):
    """Percentile interval (lo, hi) of replicates (last axis), ignoring NaN replicates."""
    boot = np.asarray(boot, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=-1)
    return (float(lo), float(hi)) if boot.ndim == 1 else (lo, hi)


def bca_ci(point: float, boot, jackknife, alpha: float = 0.05) -> tuple[float, float]:
    """Bias-corrected and accelerated interval (Efron & Tibshirani 1993, 14.3).

    z0 = Phi^-1(share of replicates < point); acceleration a from the jackknife values
    (a = sum d^3 / (6 (sum d^2)^1.5), d = mean - theta_(i)). Falls back to
    :func:`percentile_ci` when degenerate (share 0 or 1, constant jackknife, bad levels).
    """
    boot = np.asarray(boot, dtype=np.float64).ravel()
    boot = boot[np.isfinite(boot)]
    jack = np.asarray(jackknife, dtype=np.float64).ravel()
    jack = jack[np.isfinite(jack)]
    if boot.size == 0 or not np.isfinite(point):
        return (float("nan"), float("nan"))
    share = np.mean(boot < point)
    d = jack.mean() - jack if jack.size >= 2 else np.zeros(0)
    den = 6.0 * np.sum(d ** 2) ** 1.5
    if not 0 < share < 1 or den == 0:
        return percentile_ci(boot, alpha)
    z0 = _st.norm.ppf(share)
    acc = np.sum(d ** 3) / den
    zq = _st.norm.ppf([alpha / 2, 1 - alpha / 2])
    den_q = 1 - acc * (z0 + zq)
    if (den_q <= 0).any():
        return percentile_ci(boot, alpha)
    levels = _st.norm.cdf(z0 + (z0 + zq) / den_q)
    lo, hi = np.percentile(boot, 100 * levels)
    return float(lo), float(hi)


def paired_bootstrap(y, s_a, s_b, mask=None, groups=None, *, n_boot: int = 1000, seed=0,
                     alpha: float = 0.05, min_pos: int = 5) -> dict[str, Any]:
    """Macro-AUC difference b - a on the same images, with the same patient resamples.

    Returns ``diff`` (point), ``lo``/``hi`` (percentile interval of the replicate
    differences), ``se`` (their sd), ``p`` (two-sided: 2 min(P(d <= 0), P(d >= 0)), at most
    1), ``n_boot`` (finite replicates used), ``boot`` (the differences), ``classes_kept``,
    ``flagged``.
    """
    r = macro_auc_boot(y, [s_a, s_b], mask, groups, n_boot=n_boot, seed=seed, min_pos=min_pos)
    d = r["boot"][1] - r["boot"][0]
    fin = d[np.isfinite(d)]
    lo, hi = percentile_ci(fin, alpha)
    nan = float("nan")
    se = float(np.std(fin, ddof=1)) if fin.size > 1 else nan
    p = float(min(1.0, 2 * min(np.mean(fin <= 0), np.mean(fin >= 0)))) if fin.size else nan
    return dict(diff=float(r["point"][1] - r["point"][0]), lo=lo, hi=hi, se=se, p=p,
                n_boot=int(fin.size), boot=d, classes_kept=r["classes_kept"],
                flagged=r["flagged"])


def _midrank(x):
    """Midranks (1-based, ties share their mean rank) by one sort."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], xs.size]
    mid = (starts + ends + 1) / 2.0                    # mean of ranks starts+1 .. ends
    out = np.empty(x.size)
    out[order] = np.repeat(mid, ends - starts)
    return out


def delong(y, s_a, s_b, *, alpha: float = 0.05) -> dict[str, float]:
    """Paired DeLong test of AUC_b - AUC_a for one binary class (fast midranks, Sun & Xu 2014).

    Returns ``auc_a``, ``auc_b``, ``diff`` (b - a), ``se``, ``z``, ``p`` (two-sided normal),
    ``lo``/``hi`` (diff +- z_{1-alpha/2} se). NaN everywhere without positives or negatives.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    sc = np.vstack([np.asarray(s_a, dtype=np.float64).ravel(),
                    np.asarray(s_b, dtype=np.float64).ravel()])
    if sc.shape[1] != y.size or not np.isin(y, (0.0, 1.0)).all() or np.isnan(sc).any():
        raise ValueError("y must be 0/1 and s_a, s_b finite scores of the same length")
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    keys = ("auc_a", "auc_b", "diff", "se", "z", "p", "lo", "hi")
    if m == 0 or n == 0:
        return dict.fromkeys(keys, float("nan"))
    v10, v01, auc = np.empty((2, m)), np.empty((2, n)), np.empty(2)
    for r, x in enumerate(sc):
        tz, tx, ty = _midrank(x), _midrank(x[pos]), _midrank(x[~pos])
        auc[r] = (tz[pos].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[pos] - tx) / n                  # share of negatives below each positive
        v01[r] = 1.0 - (tz[~pos] - ty) / m           # share of positives above each negative
    cov = (np.cov(v10) / m if m > 1 else 0.0) + (np.cov(v01) / n if n > 1 else 0.0)
    cov = np.broadcast_to(cov, (2, 2))
    diff = float(auc[1] - auc[0])
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    if se > 0:
        z = diff / se
    else:
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    half = _st.norm.ppf(1 - alpha / 2) * se
    return dict(auc_a=float(auc[0]), auc_b=float(auc[1]), diff=diff, se=se, z=float(z),
                p=float(2 * _st.norm.sf(abs(z))), lo=float(diff - half), hi=float(diff + half))


# --------------------------------------------------------------------------- seeds
def seed_interval(values, alpha: float = 0.05, bounds: tuple[float, float] | None = None
                  ) -> dict[str, float]:
    """Student-t interval of the mean over training seeds (NaN values ignored).

    Returns ``mean``, ``sd`` (ddof 1), ``n``, ``lo``, ``hi``, ``half``; one seed gives a NaN sd
    and interval (seed variation is unknown, not zero). ``bounds`` (the metric's range, e.g.
    (0, 1) for an F1 or an accuracy) truncates ``lo``/``hi`` to it: with 3 seeds the t
    quantile is 4.3 and one poor seed pushes the interval past the range. ``half`` stays the
    untruncated half-width.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    nan = float("nan")
    n = int(v.size)
    mean = float(v.mean()) if n else nan
    if n < 2:
        return dict(mean=mean, sd=nan, n=n, lo=nan, hi=nan, half=nan)
    sd = float(v.std(ddof=1))
    half = float(_st.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, float(bounds[0])), min(hi, float(bounds[1]))
    return dict(mean=mean, sd=sd, n=n, lo=lo, hi=hi, half=half)


def pooled_interval(points, per_seed_boot, alpha: float = 0.05) -> dict[str, float]:
    """Normal interval of the seed-mean accounting for training-seed AND test-set variation.

    ``points`` (n_seeds,) point estimates; ``per_seed_boot`` (n_seeds, n_boot) each seed's
    metric on the SAME bootstrap resamples of the test set. ``se_test`` = sd over replicates
    of the per-replicate seed mean; ``se_seed`` = sd(points) / sqrt(n_seeds) (0 for one seed);
    ``se`` = sqrt(se_seed^2 + se_test^2); interval = mean +- z_{1-alpha/2} se.
    """
    p = np.asarray(points, dtype=np.float64).ravel()
    b = np.atleast_2d(np.asarray(per_seed_boot, dtype=np.float64))
    if b.shape[0] != p.size:
        raise ValueError(f"per_seed_boot has {b.shape[0]} rows; expected {p.size} seeds")
    n_seeds = int(p.size)
    mean = float(p.mean())
    rep = _nanmean_rows(b, axis=0)
    rep = rep[np.isfinite(rep)]
    se_test = float(rep.std(ddof=1)) if rep.size > 1 else float("nan")
    se_seed = float(p.std(ddof=1) / np.sqrt(n_seeds)) if n_seeds > 1 else 0.0
    se = float(np.hypot(se_seed, se_test))
    half = float(_st.norm.ppf(1 - alpha / 2) * se)
    return dict(mean=mean, lo=mean - half, hi=mean + half, se=se, se_seed=se_seed,
                se_test=se_test, n_seeds=n_seeds)


def min_detectable_effect(se, alpha: float = 0.05, power: float = 0.8):
    """Smallest true effect detected with ``power`` by a two-sided level-``alpha`` test:
    (z_{1-alpha/2} + z_power) * se. NaN in, NaN out; arrays are accepted."""
    mde = (_st.norm.ppf(1 - alpha / 2) + _st.norm.ppf(power)) * np.asarray(se, dtype=float)
    return float(mde) if mde.ndim == 0 else mde


# --------------------------------------------------------------------------- verdicts
def verdict(lo: float, hi: float, *, kind: str = "greater", margin: float = 0.0) -> str:
    """Judge a claim about an effect from its interval (lo, hi); one of :data:`VERDICTS`.

    - ``"greater"`` (effect > margin): holds iff lo > margin, contradicted iff hi < margin.
    - ``"less"`` (effect < margin): holds iff hi < margin, contradicted iff lo > margin.
    - ``"equivalent"`` (|effect| < margin, margin > 0): holds iff -margin < lo and
      hi < margin; contradicted iff lo >= margin or hi <= -margin.

    Anything else, including a NaN bound or an interval touching the margin, is
    ``"inconclusive"``.
    """
    if kind not in ("greater", "less", "equivalent"):
        raise ValueError(f"kind must be 'greater', 'less' or 'equivalent', not {kind!r}")
    if kind == "equivalent" and not margin > 0:
        raise ValueError("an equivalence claim needs a margin > 0")
    lo, hi = float(lo), float(hi)
    if np.isnan(lo) or np.isnan(hi):
        return "inconclusive"
    if lo > hi:
        raise ValueError(f"lo ({lo}) > hi ({hi})")
    if kind == "greater":
        res = "holds" if lo > margin else "contradicted" if hi < margin else None
    elif kind == "less":
        res = "holds" if hi < margin else "contradicted" if lo > margin else None
    else:
        res = ("holds" if -margin < lo and hi < margin
               else "contradicted" if lo >= margin or hi <= -margin else None)
    return res or "inconclusive"


def summarise(points, per_seed_boot=None, *, alpha: float = 0.05, kind: str = "greater",
              margin: float = 0.0) -> dict[str, Any]:
    """Seed aggregation, interval, minimum detectable effect and verdict in one dict.

    ``lo``/``hi``/``se`` are the :func:`pooled_interval` when ``per_seed_boot`` is given
    (``interval == "pooled"``), else the :func:`seed_interval` (``interval == "seed"``, se =
    sd / sqrt(n)). ``seed_lo``/``seed_hi``/``seed_sd`` are always the t-interval over seeds;
    ``mde`` uses the se of the reported interval.
    """
    si = seed_interval(points, alpha)
    out: dict[str, Any] = dict(mean=si["mean"], n_seeds=si["n"], seed_lo=si["lo"],
                               seed_hi=si["hi"], seed_sd=si["sd"])
    if per_seed_boot is not None:
        pi = pooled_interval(points, per_seed_boot, alpha)
        out.update(mean=pi["mean"], n_seeds=pi["n_seeds"], lo=pi["lo"], hi=pi["hi"],
                   se=pi["se"], se_seed=pi["se_seed"], se_test=pi["se_test"],
                   interval="pooled")
    else:
        se = si["sd"] / np.sqrt(si["n"]) if si["n"] > 1 else float("nan")
        out.update(lo=si["lo"], hi=si["hi"], se=float(se), interval="seed")
    out["mde"] = min_detectable_effect(out["se"], alpha)
    out["verdict"] = verdict(out["lo"], out["hi"], kind=kind, margin=margin)
    return out


def fmt_interval(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``+0.012 [-0.004, +0.028]``: a mean and its interval, signed (``n/a`` when not finite)."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
