"""The library pieces chapters 02 and 03 call while they walk through the method on one batch:
an example batch with every source in it, the parameter table (frozen parts really frozen),
the label matrix, one loss panel per term, and a small matrix over the batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from unichest_lib.book import figures, tables
from unichest_lib.data import example_batch
from unichest_lib.model import UniChest

from helpers import synth, tiny_cfg


def test_an_example_batch_holds_every_source_sorted_and_is_reproducible():
    ds = synth(("chestxray14", "vindr"), 6, 16, 0)
    b = example_batch(ds, 5, seed=3)
    src = b["source"].tolist()
    assert len(b["text"]) == 5 and b["image"].shape == (5, 1, 16, 16)
    assert set(src) == {0, 1} and src == sorted(src) and src.count(0) == 3
    again = example_batch(ds, 5, seed=3)
    assert torch.equal(b["index"], again["index"])
    assert not torch.equal(b["index"], example_batch(ds, 5, seed=4)["index"])
    assert len(set(b["index"].tolist())) == 5, "no sample twice"
    with pytest.raises(ValueError, match="at least one sample per source"):
        example_batch(ds, 1)
    with pytest.raises(ValueError, match="exceeds"):
        example_batch(ds, 13)


def test_the_parameter_table_counts_what_each_stage_trains():
    cfg = tiny_cfg(K=3)
    model = UniChest(cfg, synth(("chestxray14", "vindr"), 2, 32, 0).classes)
    conquer = tables.parameter_table(model)
    assert conquer.loc["experts QN2..QNK", "trainable"] == 0
    assert conquer.loc["QN1 (shared)", "frozen"] == 0
    assert conquer.loc["total", "parameters"] == sum(p.numel() for p in model.parameters())
    assert conquer.loc["total", "trainable"] == sum(p.numel() for p in model.trainable_parameters())
    model.start_divide()
    divide = tables.parameter_table(model)
    assert divide.loc["image encoder Φ_image", "trainable"] == 0
    assert divide.loc["text encoder Φ_text", "trainable"] == 0
    assert divide.loc["experts QN2..QNK", "frozen"] == 0 and divide.loc["gate Φ1", "trainable"] > 0
    assert divide.loc["total", "trainable"] == sum(p.numel() for p in model.trainable_parameters())


def test_the_label_matrix_greys_out_unobserved_entries():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    m = np.array([[True, False], [True, True]])
    fig = figures.label_matrix(y, m, ["a", "b"], ["s0", "s1"])
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[0, 1]) and z[0, 0] == 1 and z[1, 1] == 1
    with pytest.raises(ValueError, match="must both be"):
        figures.label_matrix(y, m[:1], ["a", "b"], ["s0", "s1"])


def test_loss_panels_give_each_term_its_own_panel_and_draw_the_chance_line():
    h = pd.DataFrame({"step": [1, 2, 3], "bcl_loss": [6.9, 6.5, 6.0],
                      "multilabel_loss": [0.2, 0.1, 0.05], "loss": [7.1, 6.6, 6.05]})
    fig = figures.loss_panels(h, chance={"bcl_loss": 6.93})
    assert [a.text for a in fig.layout.annotations] == ["bcl_loss", "multilabel_loss", "loss"]
    chance = [tr for tr in fig.data if tr.name == "bcl_loss at chance"]
    assert len(chance) == 1 and list(chance[0].y) == [6.93, 6.93]
    assert all(getattr(fig.layout, f"yaxis{'' if i == 1 else i}").type in (None, "linear", "-")
               for i in (1, 2, 3))
    with pytest.raises(ValueError, match="no '\\*_loss'"):
        figures.loss_panels(pd.DataFrame({"step": [1]}))


def test_pair_matrix_needs_a_square_matrix_over_the_labels():
    fig = figures.pair_matrix(np.eye(3), ["a", "b", "c"], title="positives")
    assert np.array(fig.data[0].z).shape == (3, 3)
    with pytest.raises(ValueError, match="square"):
        figures.pair_matrix(np.ones((2, 3)), ["a", "b"])
