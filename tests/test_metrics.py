"""The paper's metrics (Section IV-C) against scikit-learn and slow obvious references."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from unichest_lib.evaluation.metrics import (
    MACRO, binary_curve_metrics, by_class, classification_metrics, macro_summary, to_tidy,
)


def _slow_max_f1(y, s):
    """Try every distinct score as threshold (predict positive when score >= t)."""
    best = (-1.0, None, None)
    for t in np.unique(s)[::-1]:
        pred = s >= t
        tp = np.sum(pred & (y == 1))
        fp = np.sum(pred & (y == 0))
        fn = np.sum(~pred & (y == 1))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best[0]:
            best = (f1, t, np.mean(pred == (y == 1)))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_ap_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding makes many ties
    r = binary_curve_metrics(y, s)
    assert r["AUC"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert r["AP"] == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_threshold_maximises_f1_and_acc_uses_it(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    s = np.round(rng.random(150) + 0.3 * y, 2)
    r = binary_curve_metrics(y, s)
    f1, t, acc = _slow_max_f1(y, s)
    assert r["F1"] == pytest.approx(f1)
    assert r["threshold"] == pytest.approx(t)
    assert r["ACC"] == pytest.approx(acc)
    # same max F1 as scikit-learn's precision-recall curve (MedKLIP's recipe)
    p, rc, _ = precision_recall_curve(y, s)
    f1_sk = np.nan_to_num(2 * p * rc / (p + rc))
    assert r["F1"] == pytest.approx(f1_sk.max())


def test_hand_made_case():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    r = binary_curve_metrics(y, s)
    assert r["AUC"] == pytest.approx(0.75)
    assert r["AP"] == pytest.approx((1 / 2) * 1.0 + (1 / 2) * (2 / 3))
    # thresholds 0.8 -> F1 2/3; 0.4 -> 1/2; 0.35 -> 0.8; 0.1 -> 2/3
    assert r["F1"] == pytest.approx(0.8)
    assert r["threshold"] == pytest.approx(0.35)
    assert r["ACC"] == pytest.approx(0.75)


def test_perfect_and_inverted_scorers():
    y = np.array([0, 1, 0, 1, 1, 0])
    r = binary_curve_metrics(y, y * 2.0 - 1)
    assert (r["AUC"], r["F1"], r["ACC"], r["AP"]) == (1.0, 1.0, 1.0, 1.0)
    assert binary_curve_metrics(y, 1.0 - y)["AUC"] == 0.0


def test_undefined_classes_are_nan_flagged_and_excluded_from_macro():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 3)).astype(float)
    y[:, 1] = 0.0  # no positives
    y[:, 2] = 1.0  # no negatives
    y[0, 0], y[1, 0] = 0, 1
    s = rng.random((40, 3))
    df = classification_metrics(y, s, classes=["a", "b", "c"])
    per = df.set_index("class")
    assert per.loc["b", "defined"] == False and np.isnan(per.loc["b", "AUC"])  # noqa: E712
    assert per.loc["c", "defined"] == False and np.isnan(per.loc["c", "AP"])  # noqa: E712
    assert per.loc[MACRO, "AUC"] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert per.loc[MACRO, "n_undefined"] == 2 and per.loc[MACRO, "undefined"] == "b, c"
    summ = macro_summary(df)
    assert summ["n_undefined"] == 2 and summ["n_classes"] == 1
    assert df.attrs["aAUC"] == pytest.approx(summ["aAUC"])


def test_mask_excludes_missing_elements_per_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (60, 2)).astype(float)
    s = rng.random((60, 2))
    mask = rng.random((60, 2)) > 0.3
    df = classification_metrics(y, s, mask=mask, classes=["x", "y"])
    for j, name in enumerate(["x", "y"]):
        m = mask[:, j]
        row = df.set_index("class").loc[name]
        assert row["AUC"] == pytest.approx(roc_auc_score(y[m, j], s[m, j]))
        assert row["AP"] == pytest.approx(average_precision_score(y[m, j], s[m, j]))
        assert row["n"] == m.sum()
    # NaN labels are treated as missing too, same result
    y_nan = np.where(mask, y, np.nan)
    df2 = classification_metrics(y_nan, s, classes=["x", "y"])
    assert np.allclose(df2["AUC"], df["AUC"])


def test_macro_means_are_means_of_defined_classes():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (80, 4)).astype(float)
    s = rng.random((80, 4)) + 0.5 * y
    df = classification_metrics(y, s)
    per = df[df["class"] != MACRO]
    macro = df[df["class"] == MACRO].iloc[0]
    for k in ("AUC", "F1", "ACC", "AP"):
        assert macro[k] == pytest.approx(per[k].mean())


def test_random_scorer_is_near_half_and_perfect_is_one():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (4000, 5)).astype(float)
    rand = classification_metrics(y, rng.random(y.shape))
    assert abs(rand.attrs["aAUC"] - 0.5) < 0.03
    perfect = classification_metrics(y, y + 0.01 * rng.random(y.shape))
    assert perfect.attrs["aAUC"] == 1.0 and perfect.attrs["aF1"] == 1.0


def test_tidy_form_uses_paper_names():
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=float)
    s = np.array([[0.2, 0.9], [0.8, 0.1], [0.6, 0.7], [0.1, 0.3]])
    long = to_tidy(classification_metrics(y, s, classes=["p", "q"]), source="w", seed=0)
    assert set(long["metric"]) == {"AUC", "F1", "ACC", "AP", "aAUC", "aF1", "aACC", "mAP"}
    assert len(long) == 3 * 4 and (long["source"] == "w").all()


def test_by_class_puts_the_macro_row_last():
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=float)
    s = np.array([[0.2, 0.9], [0.8, 0.1], [0.6, 0.7], [0.1, 0.3]])
    long = to_tidy(classification_metrics(y, s, classes=["zeta", "alpha"]))
    table = by_class(long)
    assert list(table.index) == ["alpha", "zeta", MACRO]
    assert table.loc[MACRO, "aAUC"] == pytest.approx(long.loc[long.metric == "aAUC", "value"].item())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        classification_metrics(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        classification_metrics(np.array([[2.0], [0.0]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="classes has 1 names"):
        classification_metrics(np.zeros((3, 2)), np.zeros((3, 2)), classes=["a"])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.array([[0.0], [1.0]]), np.array([[np.nan], [0.2]]))
