"""Who is in each embedded source: patients, their true findings, and the labels a source
recorded for them (the *label prior and noise* heterogeneity of :mod:`.sources`), plus the
patient-disjoint train/valid/test split.

True findings are drawn with a Gaussian copula so that they co-occur: a patient-level
severity shared by all classes, a patient-level per-class propensity shared by that patient's
follow-up images, and an image-level term. Each class keeps its prevalence exactly as a
marginal. Labels are the findings seen through the source's labelling process: false
negatives, false positives and CheXpert-style "uncertain" mentions, which become missing
(NaN) under the U-Ignore policy (the policy the paper's multi-source setting implies: an
uncertain label is not a supervision signal).

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from .. import labels as L
from .phantom import F32
from .priors import findings as finding_names

FINDINGS = finding_names()
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
#: Correlation weights of the copula: shared severity, patient propensity, image term.
W_SEVERITY, W_PATIENT, W_IMAGE = 0.25, 0.45, 0.30
#: Classes that a "no finding" label tolerates (CheXpert's convention).
NO_FINDING_TOLERATES = ("support devices",)


@dataclass
class Population:
    """One source's images (n rows) over :data:`FINDINGS` (F columns)."""

    patients: np.ndarray  # str (n,)
    split: np.ndarray  # str (n,): "train" | "valid" | "test"
    truth: np.ndarray  # bool (n, F): rendered findings
    state: np.ndarray  # float32 (n, F): recorded 1 / 0 / NaN (uncertain)
    side: np.ndarray  # float32 (n, F): +1 right, -1 left
    u: np.ndarray  # float32 (n, F): lateral position in the lung
    v: np.ndarray  # float32 (n, F): vertical position in the lung
    jitter: np.ndarray  # float32 (n, F, 3): size, density, texture jitter
    device_kind: np.ndarray  # int (n,)


def draw_patients(rng: np.random.Generator, n: int, images_per_patient: float) -> np.ndarray:
    """Patient index of each of ``n`` images; 1 + Poisson(mean - 1) images per patient."""
    k = 1 + rng.poisson(max(images_per_patient - 1, 0), n)
    return np.repeat(np.arange(n), k)[:n]


def split_patients(rng: np.random.Generator, patient: np.ndarray, n_valid: int = 0,
                   n_test: int = 0) -> np.ndarray:
    """Assign whole patients to train/valid/test: 70/10/20 of the patients (at least one
    in each split when there are three or more), or, when ``n_test`` / ``n_valid`` > 0,
    whole patients in a random order to test until it holds at least ``n_test`` images,
    then to valid until at least ``n_valid`` (the evaluation splits sized independently of
    the training set); the rest is train."""
    if n_valid or n_test:
        return _split_by_count(rng, patient, n_valid, n_test)
    uniq = np.unique(patient)
    order = rng.permutation(len(uniq))
    n_p = len(uniq)
    n_valid = max(1, round(SPLIT_FRACTIONS[1] * n_p)) if n_p >= 3 else 0
    n_test = max(1, round(SPLIT_FRACTIONS[2] * n_p)) if n_p >= 3 else 0
    which = np.zeros(n_p, dtype=np.int64)
    which[order[:n_test]] = 2
    which[order[n_test:n_test + n_valid]] = 1
    lookup = dict(zip(uniq, which))
    return np.array([SPLITS[lookup[p]] for p in patient])


def _split_by_count(rng: np.random.Generator, patient: np.ndarray, n_valid: int,
                    n_test: int) -> np.ndarray:
    uniq, counts = np.unique(patient, return_counts=True)
    order = rng.permutation(len(uniq))
    filled = np.cumsum(counts[order])
    which = np.zeros(len(uniq), dtype=np.int64)
    # the first patients (in random order) whose images reach n_test go to test, then valid
    n_te = int(np.searchsorted(filled, n_test)) + 1 if n_test else 0
    which[order[:n_te]] = 2
    rest = filled[n_te:] - (filled[n_te - 1] if n_te else 0)
    n_va = int(np.searchsorted(rest, n_valid)) + 1 if n_valid else 0
    which[order[n_te:n_te + n_va]] = 1
    lookup = dict(zip(uniq, which))
    return np.array([SPLITS[lookup[p]] for p in patient])


def draw_findings(rng: np.random.Generator, patient: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """True findings (n, F) with marginal prevalence ``prior`` (F,), correlated within a
    patient and across classes (Gaussian copula)."""
    n_pat = patient.max() + 1
    f = len(prior)
    sev = rng.standard_normal((n_pat, 1))
    prop = rng.standard_normal((n_pat, f))
    img = rng.standard_normal((len(patient), f))
    z = (np.sqrt(W_SEVERITY) * sev[patient] + np.sqrt(W_PATIENT) * prop[patient]
         + np.sqrt(W_IMAGE) * img)
    return z > ndtri(1 - np.asarray(prior))


def conspicuity(jitter: np.ndarray) -> np.ndarray:
    """How visible each finding of each image is, as its rank in [0, 1] (0 = the smallest and
    faintest): the mean of the size and density jitter (each uniform in [-1, 1], so their
    mean has a triangular distribution) through that distribution's CDF."""
    c = (jitter[..., 0] + jitter[..., 1]) / 2
    return np.where(c < 0, (c + 1) ** 2 / 2, 1 - (1 - c) ** 2 / 2).astype(F32)


def record_labels(rng: np.random.Generator, truth: np.ndarray, noise, uncertain_rate: np.ndarray,
                  prior: np.ndarray, *, subtle: float = 0.0,
                  visible: np.ndarray | None = None) -> np.ndarray:
    """What the labeller recorded (n, F): 1, 0 or NaN (uncertain -> U-Ignore).

    ``noise`` is a :class:`~.sources.LabelNoise`; ``uncertain_rate`` (F,) are the real
    CheXpert fractions of "-1" labels (0 where CheXpert has no such class).

    ``subtle`` (the *label meaning* dial times the source's
    :attr:`~.sources.LabelMeaning.subtle`) is the share of false negatives that depend on the
    image: such a miss falls on the least visible findings (``visible``, from
    :func:`conspicuity`, below the false-negative rate) instead of at random, so the miss rate
    is unchanged but *which* findings go unlabelled follows the image. With ``subtle = 0`` the
    draws, and so the labels, are exactly those of a world without the dial.
    """
    n, f = truth.shape
    r = rng.random((n, f, 3))
    state = truth.astype(F32)
    missed = r[..., 0] < noise.false_negative
    if subtle > 0:
        if visible is None:
            raise ValueError("record_labels: subtle > 0 needs the findings' visibility")
        by_image = rng.random((n, f)) < subtle  # drawn after r: subtle = 0 keeps every label
        missed = np.where(by_image, visible < noise.false_negative, missed)
    state[truth & missed] = 0
    state[~truth & (r[..., 0] < noise.false_positive)] = 1
    # uncertain: a share of positives (real unc/(pos+unc)) and of negatives (real unc rate)
    p_pos = noise.uncertain * uncertain_rate / np.maximum(uncertain_rate + prior, 1e-6)
    p_neg = noise.uncertain * uncertain_rate
    unc = np.where(truth, r[..., 1] < p_pos, r[..., 2] < p_neg)
    state[unc] = np.nan
    return state


def _none_present(p: np.ndarray, rho: float, nodes: int = 64) -> float:
    """P(none of the findings with prevalences ``p`` is present) under :func:`draw_findings`'
    copula, whose findings of one image are equicorrelated with ``rho`` (= W_SEVERITY): a
    one-dimensional integral over the shared severity (Gauss-Hermite, ``nodes`` points)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    t = ndtri(1 - np.asarray(p, dtype=np.float64))
    inner = ndtr((t[None, :] - np.sqrt(rho) * x[:, None]) / np.sqrt(1 - rho))
    return float(np.sum(w * np.prod(inner, axis=1)) / np.sqrt(2 * np.pi))


def narrow_prior(prior: np.ndarray, definitions: dict, share: float,
                 floor: float = 0.005) -> np.ndarray:
    """Prevalences (F,) of the true findings behind labels with broad definitions.

    A source whose labeller files the findings ``definitions[c]`` under class ``c`` as well
    (on a ``share`` of its images, :func:`broaden`) reports ``c`` at its real rate ``p``. The
    narrow finding ``c`` is drawn at the prevalence ``p_n`` that solves
    ``(1 - share) * p_n + share * P(c or any covered finding present) = p`` under the copula
    of :func:`draw_findings` (not below ``floor``), so the share of images that *show*
    something the labeller calls ``c`` stays the real rate."""
    out = np.array(prior, dtype=np.float64)
    rho = W_SEVERITY
    for c, members in definitions.items():
        j, kids = FINDINGS.index(c), [prior[FINDINGS.index(m)] for m in members]

        def shown(pn):
            return (1 - share) * pn + share * (1 - _none_present([pn, *kids], rho))

        lo, hi = floor, float(prior[j])
        if share <= 0 or hi <= lo or shown(lo) >= hi:
            out[j] = hi if share <= 0 else min(lo, hi)
            continue
        for _ in range(50):  # shown() increases with pn: bisection
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if shown(mid) < prior[j] else (lo, mid)
        out[j] = (lo + hi) / 2
    return out.astype(F32)


def broaden(rng: np.random.Generator, truth: np.ndarray, state: np.ndarray,
            definitions: dict, share: float) -> np.ndarray:
    """Recorded labels (n, F) under a labeller's broad class definitions: on a ``share`` of
    the images, class ``c`` is also recorded positive when a finding of ``definitions[c]`` is
    present and was not missed (recorded positive or uncertain: "opacity, possibly
    consolidation" is still an opacity), as CheXpert's "lung opacity" covers a consolidation
    (:data:`.sources.BROAD_DEFINITIONS`). ``share = 0`` returns ``state`` unchanged."""
    if share <= 0 or not definitions:
        return state
    state = state.copy()
    by_image = rng.random(len(state)) < share
    for c, members in definitions.items():
        cols = [FINDINGS.index(m) for m in members]
        child = (truth[:, cols] & (state[:, cols] != 0)).any(axis=1)
        state[by_image & child, FINDINGS.index(c)] = 1
    return state


def source_labels(state: np.ndarray, source: str, classes) -> np.ndarray:
    """Labels (n, c) over ``classes``: the recorded state where ``source`` annotates a class,
    NaN where it does not (missing, not negative). "no finding" is 1 when none of the
    source's own classes (but support devices) is recorded positive."""
    own = set(L.embedded_label_space(source))
    col = {c: i for i, c in enumerate(FINDINGS)}
    out = np.full((len(state), len(classes)), np.nan, dtype=F32)
    own_findings = [col[c] for c in own if c in col and c not in NO_FINDING_TOLERATES]
    any_pos = (state[:, own_findings] == 1).any(axis=1) if own_findings else np.zeros(len(state), bool)
    for j, c in enumerate(classes):
        if c not in own:
            continue
        out[:, j] = (~any_pos).astype(F32) if c == "no finding" else state[:, col[c]]
    return out


def draw_layout(rng: np.random.Generator, n: int, p_right: float):
    """Where each image's findings sit and how they vary: side, u, v (n, F), jitter (n, F, 3)."""
    f = len(FINDINGS)
    side = np.where(rng.random((n, f)) < p_right, F32(1), F32(-1))
    u = rng.uniform(-0.5, 0.6, (n, f)).astype(F32)
    v = rng.uniform(-0.5, 0.6, (n, f)).astype(F32)
    jitter = rng.uniform(-1, 1, (n, f, 3)).astype(F32)
    return side, u, v, jitter, rng.integers(1, 8, n)
