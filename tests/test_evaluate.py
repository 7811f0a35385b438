"""Evaluation wiring (paper Section IV-E): tidy tables, queries, grounding, saving.

A tiny hand-made dataset (bright squares = lesions, exact masks) and a transparent stub
model whose scores and attention come straight from the pixels let every number be checked;
one smoke UniChest checks the same functions run on the real model."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from unichest_lib.config import resolve
from unichest_lib.evaluation import classification as E
from unichest_lib.evaluation import grounding as G

from helpers import FAKE_CLASSES, fake_dataset

CLASSES = FAKE_CLASSES


class PixelModel(nn.Module):
    """Scores class j by the brightness of its half of the image; attends to bright pixels
    of that half. Any unknown query scores at random."""

    def __init__(self, classes=CLASSES):
        super().__init__()
        self.classes = tuple(classes)
        self.w = nn.Parameter(torch.zeros(1))
        self.stage = "conquer"
        self.seen_queries = []

    def class_queries(self, names):
        self.seen_queries.append(list(names))
        return torch.arange(len(names), dtype=torch.float32)[:, None].repeat(1, 4)

    def forward(self, images, texts=None, *, queries=None, return_attention=False):
        b = images.shape[0]
        c = queries.shape[0]
        grid = nn.functional.avg_pool2d(images, 2)[:, 0]  # (B, 32, 32) patch grid
        halves = torch.stack([grid[..., :16].sum((1, 2)), grid[..., 16:].sum((1, 2))], 1)
        logits = torch.randn(b, c, generator=torch.Generator().manual_seed(b))
        att = torch.zeros(b, 1, c, 32, 32)
        for j in range(min(c, 2)):
            logits[:, j] = halves[:, j] - 0.5
            side = torch.zeros_like(grid)
            side[..., 16 * j:16 * j + 16] = grid[..., 16 * j:16 * j + 16]
            att[:, 0, j] = side
        out = {"logits": logits}
        if return_attention:
            out["attention"] = att
        return out


@pytest.fixture()
def patched(monkeypatch):
    made = []

    def fake_make_dataset(cfg, sources, split, *, with_masks=False):
        made.append((tuple(sources), split, with_masks))
        extra = ("tuberculosis",) if sources[0] == "shenzhen" else ()
        return fake_dataset(classes=CLASSES + extra, with_masks=with_masks)

    monkeypatch.setattr(E, "make_dataset", fake_make_dataset)
    monkeypatch.setattr(G, "make_dataset", fake_make_dataset)
    return made


CFG = resolve("smoke", amp=False, eval_batch_size=8)


def test_query_plan_keeps_model_classes_and_appends_unknown():
    texts, cols = E.query_plan(("a", "nodule", "c"), ["nodule", "tuberculosis"], "name")
    assert texts == ["a", "nodule", "c", "tuberculosis"] and cols == [1, 3]
    texts, cols = E.query_plan(("a", "nodule"), ["nodule", "tuberculosis"], "mixed")
    assert texts[1] == "nodule" and "apex" in texts[2] and cols == [1, 2]
    texts, _ = E.query_plan(("a", "nodule"), ["nodule"], "description")
    assert texts[0] == "a" and texts[1] != "nodule"
    with pytest.raises(ValueError, match="by = 'names'"):
        E.query_plan(("a",), ["a"], "names")


def test_predict_keeps_every_sample_and_restores_mode():
    ds = fake_dataset(n=37)  # 37 = 4 batches of 8 + 5: nothing may be dropped
    model = PixelModel().train()
    pred = E.predict(model, ds, CFG)
    assert pred.probs.shape == (37, 2) and model.training
    assert ((pred.probs >= 0) & (pred.probs <= 1)).all()


def test_in_domain_table_is_tidy_and_perfect_scorer_scores_one(patched):
    df = E.in_domain(PixelModel(), CFG, sources=["chestxray14", "vindr"])
    assert list(df.columns) == list(E.COLUMNS)
    assert set(df["source"]) == {"chestxray14", "vindr"} and (df["split"] == "test").all()
    auc = df[(df["metric"] == "aAUC")]["value"]
    assert np.allclose(auc, 1.0)
    assert patched == [(("chestxray14",), "test", False), (("vindr",), "test", False)]


def test_in_domain_refuses_classes_the_model_never_saw(patched):
    with pytest.raises(ValueError, match="tuberculosis"):
        E.in_domain(PixelModel(), CFG, sources=["shenzhen"])


def test_zero_shot_marks_unseen_classes_and_uses_descriptions(patched):
    model = PixelModel()
    df = E.zero_shot(model, CFG, sources=["shenzhen"], by="mixed")
    seen = df[df["metric"] == "AUC"].set_index("class")["seen"]
    assert seen["nodule"] == True and seen["tuberculosis"] == False  # noqa: E712
    assert model.seen_queries[-1][:2] == list(CLASSES) and "apex" in model.seen_queries[-1][2]
    s = E.seen_unseen_means(df)
    assert set(s["seen"]) == {"seen", "unseen"}
    assert s.set_index("seen").loc["seen", "mean"] == pytest.approx(1.0)


def test_grounding_on_pixel_model_hits_every_lesion(patched):
    df = G.grounding_table(PixelModel(), CFG, source="chestxdet10")
    per = df[df["metric"] == "pointing_game"].set_index("class")
    ds = fake_dataset()
    assert per.loc["nodule", "n"] == ds.table.labels[:, 0].sum()
    assert per.loc["macro", "value"] == pytest.approx(1.0)
    dice = df[(df["metric"] == "Dice") & (df["class"] == "macro")]["value"].item()
    assert 0.3 < dice <= 1.0
    box = G.grounding_table(PixelModel(), CFG, source="chestxdet10", gt="box")
    assert box[box["metric"] == "pointing_game"]["value"].min() == pytest.approx(1.0)


def test_save_results_writes_next_to_checkpoint(tmp_path):
    df = pd.DataFrame({"source": ["a"], "value": [0.5]})
    path = E.save_results(df, tmp_path / "ckpt" / "best.safetensors", "zero_shot")
    assert path == tmp_path / "ckpt" / "best.zero_shot.csv"
    pd.testing.assert_frame_equal(E.load_results(path), df)
    assert [p.name for p in path.parent.iterdir()] == ["best.zero_shot.csv"]  # no temp left
    with pytest.raises(ValueError, match="file-name"):
        E.save_results(df, tmp_path / "x", "a/b")


@pytest.fixture(scope="module")
def smoke_model():
    from unichest_lib.model import UniChest

    return UniChest(CFG, CLASSES + ("pleural effusion",))


def test_real_model_runs_every_evaluation(patched, smoke_model):
    smoke_model.start_divide()
    z = E.zero_shot(smoke_model, CFG, sources=["shenzhen"], by="name")
    vals = z[z["defined"] & z["metric"].isin(["AUC", "F1", "ACC", "AP"])]["value"]
    assert vals.between(0, 1).all() and len(vals) == 3 * 4
    g = G.grounding_table(smoke_model, CFG, source="chestxdet10")
    assert g[g["defined"]]["value"].between(0, 1).all()
    heat = G.grounding_heatmaps(smoke_model, torch.rand(2, 1, 64, 64), ["nodule", "scoliosis"], CFG)
    assert heat.shape == (2, 2, 64, 64)


def test_every_class_has_a_visual_description():
    from unichest_lib.data import descriptions, labels

    for c in labels.ALL_CLASSES:
        text = descriptions.describe(c)
        assert c not in text and len(text.split()) >= 6  # describes, does not just name it
    assert descriptions.describe("TB") == descriptions.describe("tuberculosis")
    with pytest.raises(KeyError, match="no description"):
        descriptions.describe("covid-19")
