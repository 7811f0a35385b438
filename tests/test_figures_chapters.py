"""Helpers of chapters 02-04: query-network table, mean gate per source, gate heatmap and the
grounding explorer (on an untrained smoke model; behaviour, not accuracy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from unichest_lib.book import figures, notebook, tables
from unichest_lib.book.explorer import Explorer
from unichest_lib.config import resolve
from unichest_lib.data import make_dataset
from unichest_lib.data.label_spaces import union_classes
from unichest_lib.evaluation import grounding
from unichest_lib.model import UniChest


@pytest.fixture(scope="module")
def cfg():
    return notebook.anchor_cache(resolve("smoke", K=3, n_per_source=16, n_downstream=16))


@pytest.fixture(scope="module")
def divide_model(cfg):
    torch.manual_seed(0)
    return UniChest(cfg, union_classes(cfg.sources, cfg.data)).start_divide().eval()


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_query_network_table_lists_k_networks_and_their_parameters(divide_model):
    table = tables.query_network_table(divide_model)
    qns = table[table["role"] == "query network"]
    assert list(qns.index) == ["QN1 (shared)", "QN2 (expert)", "QN3 (expert)"]
    assert qns.loc["QN1 (shared)", "parameters"] == _count(divide_model.qn1)
    assert qns["parameters"].iloc[1:].sum() == _count(divide_model.experts)
    assert table.loc["gate Φ1", "parameters"] == _count(divide_model.gate)


def test_query_network_table_with_one_network(cfg):
    model = UniChest(cfg.replace(K=1), union_classes(cfg.sources, cfg.data))
    assert list(tables.query_network_table(model).index) == ["QN1 (shared)"]


def test_mean_gate_by_source_rows_are_distributions(cfg, divide_model):
    cfg = cfg.replace(amp=False)  # the fp32 reference below; bf16 is native on some CPUs
    gates = tables.mean_gate_by_source(divide_model, cfg, sources=cfg.sources[:2])
    assert list(gates.index) == list(cfg.sources[:2])
    assert list(gates.columns) == ["QN2", "QN3"]
    np.testing.assert_allclose(gates.sum(axis=1).to_numpy(), 1.0, atol=1e-5)
    # reference: the mean of softmax(Φ1(Ī)) over the first source's images, by hand
    ds = make_dataset(cfg, [cfg.sources[0]], "valid")
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        emb = divide_model(images)["image_emb"]
        ref = torch.softmax(divide_model.gate(emb), -1).mean(0).numpy()
    np.testing.assert_allclose(gates.iloc[0].to_numpy(), ref, atol=1e-4)


def test_mean_gate_by_source_refuses_a_conquer_model(cfg):
    model = UniChest(cfg, union_classes(cfg.sources, cfg.data))
    with pytest.raises(ValueError, match="Divide-stage"):
        tables.mean_gate_by_source(model, cfg)


def test_gate_heatmap_shows_values_and_rejects_empty():
    gates = pd.DataFrame([[0.7, 0.3], [0.2, 0.8]], index=["a", "b"], columns=["QN2", "QN3"])
    fig = figures.gate_heatmap(gates)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), gates.to_numpy())
    assert list(fig.data[0].y) == ["a", "b"]
    with pytest.raises(ValueError, match="empty"):
        figures.gate_heatmap(gates.iloc[:0])


@pytest.fixture(scope="module")
def explorer(cfg, divide_model):
    ds = make_dataset(cfg, ["chestxdet10"], "test", with_masks=True)
    return Explorer(divide_model, ds, cfg)


def test_explorer_positives_are_observed_positive_labels(explorer):
    table = explorer.dataset.table
    pairs = explorer.positives()
    assert pairs, "the smoke chestxdet10 test split should have positives"
    for i, finding in pairs:
        j = explorer.classes.index(finding)
        assert table.mask[i, j] and table.labels[i, j] > 0.5


def test_explorer_view_marks_the_heatmap_peak(explorer):
    i, finding = explorer.positives(1)[0]
    heat = explorer.heatmap(i, finding)
    assert heat.shape == tuple(explorer.dataset[i]["image"].shape[-2:])
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    fig = explorer.view(i, finding)
    x, y = fig.data[1].x[0], fig.data[1].y[0]
    assert heat[y, x] >= heat.max() - 1e-6  # a pixel of maximum heat ...
    assert [y, x] == grounding.peak(torch.as_tensor(heat)[None])[0].tolist()  # ... the scored one
    assert fig.layout.title.text.startswith(f"#{i} {finding} p=")  # a positive: no "(negative)"


def test_explorer_static_grid_and_bad_input(explorer):
    fig = explorer.static_grid(n=4, cols=2)
    assert sum(t.type == "image" for t in fig.data) == min(4, len(explorer.positives()))
    with pytest.raises(ValueError, match="not a class"):
        explorer.view(0, "no such finding")
    with pytest.raises(IndexError, match="outside"):
        explorer.view(len(explorer.dataset), explorer.classes[0])


def test_explorer_annotated_rgb_draws_box_and_peak(explorer):
    i, finding = explorer.positives(1)[0]
    rgb, title = explorer.annotated_rgb(i, finding)
    heat = explorer.heatmap(i, finding)
    y, x = grounding.peak(torch.as_tensor(heat)[None])[0].tolist()
    assert rgb.dtype == np.uint8 and rgb.shape == (*heat.shape, 3)
    assert tuple(rgb[y, x]) == (255, 255, 255) and finding in title
    j = explorer.classes.index(finding)
    x0, y0 = (int(round(v)) for v in explorer.dataset[i]["boxes"][j][:2].tolist())
    assert tuple(rgb[min(max(y0, 0), heat.shape[0] - 1), min(max(x0, 0), heat.shape[1] - 1)]) == (0, 255, 102)


def test_explorer_widget_updates_on_selection(explorer):
    pytest.importorskip("ipywidgets")
    box = explorer.widget()
    image_dd, finding_dd = box.children[0].children
    title, picture = box.children[1], box.children[2]
    before = picture.value
    assert before[:4] == b"\x89PNG"
    other = next(c for c in explorer.classes if c != finding_dd.value)
    finding_dd.value = other
    assert f" {other} " in title.value and picture.value != before


def test_explorer_gallery_takes_hits_then_misses_one_class_first():
    inst = pd.DataFrame({"row": [0, 1, 2, 3, 4, 5, 6], "class": list("aabcaab"),
                         "hit": [True, True, False, False, True, False, False]})
    pairs = Explorer.hits_and_misses(None, inst, n=2)
    assert pairs == [(0, "a"), (1, "a"), (2, "b"), (3, "c")]  # one hit class only: it repeats
    assert Explorer.hits_and_misses(None, inst, n=3)[3:] == [(2, "b"), (3, "c"), (5, "a")]
    assert Explorer.hits_and_misses(None, inst, n=5)[:3] == [(0, "a"), (1, "a"), (4, "a")]
    assert Explorer.hits_and_misses(None, inst.iloc[:0], n=2) == []


def test_explorer_gallery_of_the_model_marks_each_tile(explorer, cfg):
    inst = grounding.grounding_instances(explorer.model, cfg, "chestxdet10")
    pairs = explorer.hits_and_misses(inst, 2)
    fig = explorer.static_grid(pairs, cols=2)
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == len(pairs)
    expected = [" hit" if h else " miss" for h in
                inst.set_index(["row", "class"]).loc[pairs, "hit"]]
    assert all(t.endswith(e) for t, e in zip(titles, expected))
