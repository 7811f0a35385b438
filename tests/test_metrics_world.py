"""Acceptance: on the embedded world, a perfect scorer gets AUC 1 and a random one about 0.5,
with the world's own missing-label masks (paper Section IV-C metrics)."""

import numpy as np
import pytest

from unichest_lib.config import resolve
from unichest_lib.data import make_dataset
from unichest_lib.evaluation.metrics import classification_metrics


@pytest.fixture(scope="module")
def table():
    cfg = resolve("smoke")
    return make_dataset(cfg, cfg.sources, "train").table


def test_perfect_scorer_gets_auc_one_on_the_embedded_world(table):
    y, m = np.nan_to_num(table.labels), table.mask
    df = classification_metrics(y, y, m, table.classes)
    defined = df[df["defined"] & (df["class"] != "macro")]
    assert len(defined) >= 5
    assert np.allclose(defined[["AUC", "F1", "ACC", "AP"]], 1.0)
    assert df.attrs["aAUC"] == 1.0


def test_random_scorer_gets_auc_near_half_on_the_embedded_world(table):
    y, m = np.nan_to_num(table.labels), table.mask
    rng = np.random.default_rng(0)
    aucs = [classification_metrics(y, rng.random(y.shape), m, table.classes).attrs["aAUC"]
            for _ in range(40)]
    assert abs(np.mean(aucs) - 0.5) < 0.03


def test_missing_classes_are_not_scored_as_negatives(table):
    # score every missing entry as a confident positive: if missing counted as negative,
    # AUC would fall below 1; excluded per element it stays perfect
    y, m = np.nan_to_num(table.labels), table.mask
    s = np.where(m, y, 1.0)
    assert classification_metrics(y, s, m, table.classes).attrs["aAUC"] == 1.0
    assert classification_metrics(y, s, None, table.classes).attrs["aAUC"] < 1.0
