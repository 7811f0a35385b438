"""The data dispatcher and loaders (make_dataset / make_loader contract)."""

import numpy as np
import pytest
import torch

from unichest_lib import data
from unichest_lib.config import ConfigError, resolve
from unichest_lib.data.samples import SEP, MultiSourceDataset, SampleTable


def tiny(n=10, sources=("chestxray14", "mimic"), texts=None):
    classes = ("cardiomegaly", "pleural effusion")
    labels = np.zeros((n, 2), np.float32)
    labels[::2, 0] = 1
    labels[1::3, 1] = np.nan
    table = SampleTable(classes=classes, sources=tuple(sources), labels=labels,
                        source_ids=np.arange(n) % len(sources), patients=np.arange(n).astype(str),
                        texts=texts or [f"t{i}" for i in range(n)])
    return MultiSourceDataset(table, lambda i: np.full((8, 8), i, np.uint8))


def test_collate_stacks_tensors_and_keeps_texts_as_list():
    ds = tiny()
    b = data.collate([ds[0], ds[1], ds[2]])
    assert b["image"].shape == (3, 1, 8, 8) and b["labels"].shape == (3, 2)
    assert b["mask"].dtype == torch.bool and b["source"].tolist() == [0, 1, 0]
    assert b["text"] == ["t0", "t1", "t2"]


def test_train_loader_shuffles_reproducibly_and_drops_last():
    cfg = resolve("smoke", seed=3)
    ds = tiny(10)
    order = lambda: torch.cat([b["index"] for b in data.make_loader(ds, cfg, train=True, batch_size=4)])
    a, b = order(), order()
    assert torch.equal(a, b) and len(a) == 8  # 2 full batches, last partial dropped
    assert not torch.equal(a, torch.arange(8))


def test_eval_loader_keeps_every_sample_in_order():
    cfg = resolve("smoke")
    idx = torch.cat([b["index"] for b in data.make_loader(tiny(10), cfg, train=False, batch_size=4)])
    assert idx.tolist() == list(range(10))


def test_train_loader_smaller_than_a_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.make_loader(tiny(3), resolve("smoke"), train=True, batch_size=4)
    with pytest.raises(ConfigError, match="batch_size"):
        data.make_loader(tiny(3), resolve("smoke"), train=False, batch_size=0)


def test_report_texts_are_filtered_and_cached(tmp_path):
    reports = ["Small right pleural effusion. No pneumothorax.", "label text"] * 3
    ds = tiny(6, sources=("mimic", "chestxray14"), texts=list(reports))
    data.filter_report_texts(ds, cache_dir=tmp_path)
    assert ds.table.texts[0] == "right pleural effusion"
    assert ds.table.texts[1] == "label text"  # chestxray14 rows keep label concatenation
    assert len(list((tmp_path / "report_filter").glob("*.json"))) == 1
    ds2 = tiny(6, sources=("mimic", "chestxray14"), texts=list(reports))
    data.filter_report_texts(ds2, cache_dir=tmp_path)
    assert ds2.table.texts == ds.table.texts


def test_already_filtered_texts_are_left_alone():
    t = SEP.join(["right pleural effusion", "edema"])
    ds = tiny(2, sources=("mimic",), texts=[t, t])
    data.filter_report_texts(ds, cache_dir=None)
    assert ds.table.texts == [t, t]


def test_make_dataset_rejects_bad_split_and_sources():
    cfg = resolve("smoke")
    with pytest.raises(ValueError, match="split"):
        data.make_dataset(cfg, ["chestxray14"], "training")
    with pytest.raises(ValueError, match="more than once"):
        data.make_dataset(cfg, ["chestxray14", "chestxray14"], "train")
    with pytest.raises(ValueError, match="empty"):
        data.make_dataset(cfg, [], "train")


def test_embedded_dispatch_filters_report_texts():
    from unichest_lib.data.label_spaces import union_classes

    cfg = resolve("smoke")  # the shared cache: the world's priors and images are reused
    ds = data.make_dataset(cfg, ["mimic", "chestxray14"], "train")
    assert ds.sources == ("mimic", "chestxray14")
    assert ds.classes == union_classes(["mimic", "chestxray14"], cfg.data)
    mimic_rows = [i for i in range(len(ds)) if ds.table.source_ids[i] == 0]
    assert mimic_rows
    for i in mimic_rows:
        t = ds.table.texts[i]
        assert "FINDINGS" not in t and "IMPRESSION" not in t and not t.endswith(".")
    item = ds[0]
    assert item["image"].shape == (1, cfg.image_size, cfg.image_size)
    batch = next(iter(data.make_loader(ds, cfg, train=True)))
    assert len(batch["text"]) == cfg.batch_size
