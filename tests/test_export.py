"""The embedded world exported in each real dataset's layout and read back through the real
loaders gives the same samples as the embedded path (issue #16): for every source and split,
the same images (exactly for lossless formats; up to min-max scaling for 16-bit PNG and
DICOM, which the real reader rescales; within JPEG's error), the same labels on the classes
both label spaces share, the same patient-disjoint splits, the same reports and boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from unichest_lib import config as C
from unichest_lib.data import export as E
from unichest_lib.data.export import agreement as X
from unichest_lib.data.world import world_of

#: Sources whose format module exists (the others are skipped, not failed, while written).
SOURCES = [s for s, m in E.FORMATS.items()
           if (Path(E.__file__).parent / f"{m}.py").is_file()]
#: JPEG at quality 95 on 64 px synthetic images: per-image mean and max absolute error.
JPEG_MEAN, JPEG_MAX = 0.01, 0.12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = C.resolve("smoke", cache_dir=str(tmp_path_factory.mktemp("cache")))
    out = tmp_path_factory.mktemp("export")
    report = E.export_world(cfg, out, SOURCES, progress=False)
    real = C.resolve("smoke", data=str(report.data_yml), cache_dir=cfg.cache_dir)
    manifest = pd.read_csv(out / E.MANIFEST_CSV, dtype={"patient": str})
    return cfg, real, out, manifest, report


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_exported_source_reads_back_the_same(exported, source, split):
    cfg, real_cfg, out, manifest, _ = exported
    with_masks = source == "chestxdet10"
    emb, real, order = X.matched(cfg, real_cfg, out, source, split, with_masks=with_masks)
    # the same images in the split, each once
    assert (order >= 0).all() and sorted(order.tolist()) == list(range(len(emb)))
    # labels on the shared classes (NaN = missing on both sides)
    shared = X.shared_classes(emb, real, source)
    assert shared, f"{source}: no class in common"
    a = emb.table.labels[order][:, [emb.classes.index(c) for c in shared]]
    b = real.table.labels[:, [real.classes.index(c) for c in shared]]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{source}: missing differs")
    np.testing.assert_array_equal(np.nan_to_num(a, nan=-1), np.nan_to_num(b, nan=-1),
                                  err_msg=f"{source}: labels differ on {shared}")
    # a label the format folds into one (VinDr's "Nodule/Mass"): negatives stay negative,
    # positives of either class become missing for both
    for c in X.ambiguous(source):
        folded = np.nanmax(emb.table.labels[order][:, [emb.classes.index(k)
                                                       for k in X.ambiguous(source)]], axis=1)
        got = real.table.labels[:, real.classes.index(c)]
        np.testing.assert_array_equal(np.isnan(got), folded == 1)
        np.testing.assert_array_equal(got[folded == 0], 0)
    # patient-disjoint, and the same grouping of images into patients
    ep, rp = emb.patients[order], real.table.patients
    for x in set(ep):
        assert len({r for r, e in zip(rp, ep) if e == x}) == 1, f"{source}: patient {x} split"
    if source not in NO_PATIENT_IDS:
        assert len(set(ep)) == len(set(rp))
    # pixels
    kind = X.pixel_kind(source)
    for i in range(min(len(real), 8)):
        x = emb.image_fn(int(order[i])).astype(np.float64) / 255.0
        y = np.asarray(real.image_fn(i), np.float64)
        if kind == "exact":
            np.testing.assert_allclose(y, x, atol=1e-6)
        elif kind == "minmax":
            np.testing.assert_allclose(y, X.minmax(x), atol=1e-4)
        else:
            d = np.abs(y - x)
            assert d.mean() < JPEG_MEAN and d.max() < JPEG_MAX, (d.mean(), d.max())
    # reports
    if any(r is not None for r in emb.reports):
        for i in range(len(real)):
            assert X.words(real.reports[i]) == X.words(emb.reports[order[i]])
            assert X.words(real.reports[i]), f"{source}: empty report"
    # boxes
    if with_masks:
        for i in range(len(real)):
            _, eb = emb.masks_fn(int(order[i]))
            _, rb = real.masks_fn(i)
            eb = eb[[emb.classes.index(c) for c in shared]]
            rb = rb[[real.classes.index(c) for c in shared]]
            np.testing.assert_array_equal(np.isnan(eb), np.isnan(rb))
            np.testing.assert_allclose(np.nan_to_num(rb), np.nan_to_num(eb), atol=1.0)


#: Datasets that publish no patient ids: the real path counts each image as a patient.
NO_PATIENT_IDS = {"vindr", "siim", "chestxdet10", "shenzhen"}


def test_compare_table_agrees_everywhere(exported):
    cfg, _, _, _, report = exported
    t = X.compare(cfg, report.data_yml, n_pixels=4)
    assert len(t) == 3 * len(SOURCES)
    assert t["same_images"].all() and t["same_patients"].all()
    assert (t["labels_agree"] == 1.0).all()
    assert (t["embedded"] == t["exported"]).all()


def test_split_file_is_the_embedded_split(exported):
    cfg, _, out, manifest, _ = exported
    world = world_of(cfg)
    for s in SOURCES:
        m = manifest[manifest["dataset"] == s].sort_values("world_row")
        assert (m["split"].to_numpy() == world.population(s).split).all()
    splits = pd.read_csv(out / E.SPLITS_CSV, dtype=str)
    assert not splits.duplicated(["dataset", "patient"]).any()


def test_export_report_counts_every_image(exported):
    cfg, _, _, manifest, report = exported
    world = world_of(cfg)
    t = report.table.set_index("dataset")
    for s in SOURCES:
        assert t.loc[s, "images"] == world.size(s) == (manifest["dataset"] == s).sum()
        assert t.loc[s, "MB"] > 0


@pytest.mark.slow
def test_conquer_and_divide_on_exported_lossless_source_are_bit_identical(exported, tmp_path):
    """ChestX-ray14 is exported losslessly (8-bit PNG, the same label space): Conquer and
    Divide at smoke read through the real loaders must train exactly the same weights."""
    from safetensors.torch import load_file

    from unichest_lib.training import stages

    cfg, real_cfg, *_ = exported
    kw = dict(sources=("chestxray14",), val_source="chestxray14")
    weights, metrics = {}, {}
    for name, c in (("embedded", cfg.replace(**kw)), ("exported", real_cfg.replace(**kw))):
        q = stages.conquer(c, tmp_path / name / "conquer", progress=False)
        d = stages.divide(c, q.checkpoint, tmp_path / name / "divide", progress=False)
        weights[name] = load_file(str(d.checkpoint) + ".safetensors")
        metrics[name] = (q.best_metric, d.best_metric)
    assert metrics["embedded"] == metrics["exported"]
    assert weights["embedded"].keys() == weights["exported"].keys()
    for k, v in weights["embedded"].items():
        assert torch.equal(v, weights["exported"][k]), k


def test_the_data_cards_page_shows_the_yaml_the_exporter_writes(exported):
    """The book's worked example (the Data cards page) is the smoke export's data.yml, not a
    hand-kept copy."""
    import re

    import yaml

    page = (Path(__file__).parents[1] / "book" / "data_cards.md").read_text(encoding="utf-8")
    section = page[page.index("## Using the real datasets"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    written = yaml.safe_load(exported[4].data_yml.read_text(encoding="utf-8"))
    assert yaml.safe_load(block) == written
