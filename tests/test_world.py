"""The embedded world keeps its promises: the dials of ``data/world/sources.py``, splits,
caching, reports and the data cards generated from the code."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from unichest_lib.config import PRETRAIN_SOURCES, resolve
from unichest_lib.data import label_spaces
from unichest_lib.data import labels as L
from unichest_lib.data.world import CHUNK, FINDINGS, World, priors
from unichest_lib.data.world import population as popm
from unichest_lib.data.world.render import render_rows
from unichest_lib.data.world.sources import SPECS, dials, effective

# the derived priors are cached here across test runs (gitignored .cache/)
PRIORS_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test-world"


@pytest.fixture(scope="module", autouse=True)
def _warm_priors():
    priors.real_statistics(PRIORS_CACHE)


def cfg(tmp_path, **kw):
    return resolve("smoke", cache_dir=str(tmp_path), **kw)


def test_same_seed_gives_same_pixels_labels_and_reports(tmp_path):
    a = World(cfg(tmp_path / "a")).dataset(["mimic", "vindr"], "train")
    b = World(cfg(tmp_path / "b")).dataset(["mimic", "vindr"], "train")
    assert len(a) == len(b) > 0
    for i in (0, len(a) // 2, len(a) - 1):
        assert np.array_equal(a[i]["image"].numpy(), b[i]["image"].numpy())
        assert a[i]["text"] == b[i]["text"]
    np.testing.assert_array_equal(a.table.labels, b.table.labels)
    other = World(cfg(tmp_path / "c", world_seed=7)).dataset(["mimic", "vindr"], "train")
    assert not np.array_equal(a[0]["image"].numpy(), other[0]["image"].numpy())


def test_dataset_follows_the_sample_contract(tmp_path):
    c = cfg(tmp_path)
    ds = World(c).dataset(list(PRETRAIN_SOURCES), "train")
    assert ds.classes == label_spaces.union_classes(PRETRAIN_SOURCES, "embedded")
    assert ds.sources == PRETRAIN_SOURCES
    item = ds[3]
    assert item["image"].shape == (1, c.image_size, c.image_size)
    assert item["image"].dtype.is_floating_point and 0 <= item["image"].min() <= item["image"].max() <= 1
    assert item["labels"].shape == item["mask"].shape == (len(ds.classes),)
    assert isinstance(item["text"], str) and item["text"]
    # every source contributes, and each row's mask is exactly its source's label space
    assert set(ds.table.source_ids.tolist()) == set(range(len(PRETRAIN_SOURCES)))
    for s_id, s in enumerate(PRETRAIN_SOURCES):
        rows = ds.table.source_ids == s_id
        outside = ~label_spaces.observed_mask(s, ds.classes, "embedded")
        assert np.isnan(ds.table.labels[rows][:, outside]).all(), f"{s}: classes outside its space must be NaN"
    assert len(ds.reports) == len(ds) and len(ds.world_rows) == len(ds)


def test_missing_classes_are_masked_not_negative(tmp_path):
    ds = World(cfg(tmp_path)).dataset(["chestxray14", "vindr"], "train")
    j = ds.classes.index("aortic enlargement")  # VinDr labels it, ChestX-ray14 does not
    cxr = ds.table.source_ids == 0
    assert np.isnan(ds.table.labels[cxr, j]).all()
    assert not ds[int(np.flatnonzero(cxr)[0])]["mask"][j]
    assert not np.isnan(ds.table.labels[~cxr, j]).any()


def test_chexpert_uncertain_labels_become_missing_only_with_heterogeneity(tmp_path):
    own = [L.ALL_CLASSES.index(c) for c in L.EMBEDDED_LABEL_SPACES["chexpert"]]
    w1 = World(cfg(tmp_path, n_per_source=400))
    lab1 = popm.source_labels(w1.population("chexpert").state, "chexpert", L.ALL_CLASSES)
    assert np.isnan(lab1[:, own]).mean() > 0.01  # U-Ignore: uncertain -> NaN
    w0 = World(cfg(tmp_path, n_per_source=400, heterogeneity=0.0))
    lab0 = popm.source_labels(w0.population("chexpert").state, "chexpert", L.ALL_CLASSES)
    assert not np.isnan(lab0[:, own]).any()


def test_splits_are_patient_disjoint_and_patients_have_several_images(tmp_path):
    w = World(cfg(tmp_path, n_per_source=200))
    for s in SPECS:
        pop = w.population(s)
        parts = {sp: set(pop.patients[pop.split == sp]) for sp in popm.SPLITS}
        assert all(parts.values()), f"{s}: every split needs patients"
        assert not parts["train"] & parts["valid"] and not parts["train"] & parts["test"]
        assert not parts["valid"] & parts["test"]
    _, counts = np.unique(w.population("mimic").patients, return_counts=True)
    assert counts.max() >= 2 and (counts >= 2).sum() >= 10
    ds_tr = w.dataset(["mimic"], "train")
    ds_te = w.dataset(["mimic"], "test")
    assert not set(ds_tr.patients) & set(ds_te.patients)


def _one_finding_per_row(w, source="chestxdet10"):
    """A population copy whose row j has only finding j (and a copy with none)."""
    base = w.population(source)
    n = len(FINDINGS)
    rows = np.arange(n)
    pick = lambda a: a[rows % len(a)].copy()  # noqa: E731
    with_f = popm.Population(pick(base.patients), pick(base.split), np.eye(n, dtype=bool),
                             pick(base.state), pick(base.side), pick(base.u), pick(base.v),
                             pick(base.jitter), pick(base.device_kind))
    without = popm.Population(*[getattr(with_f, f) for f in ("patients", "split")],
                              np.zeros((n, n), bool), *[getattr(with_f, f) for f in
                              ("state", "side", "u", "v", "jitter", "device_kind")])
    return with_f, without, rows


@pytest.mark.parametrize("size", [64, 128])  # 128 px renders at half size and upsamples
def test_every_finding_has_a_mask_that_covers_what_it_changes(tmp_path, size):
    w = World(cfg(tmp_path, image_size=size))
    spec = effective("chestxdet10", dials(0.0))
    spec = spec.__class__(**{**spec.__dict__, "acquisition": spec.acquisition.__class__(noise=0.0)})
    with_f, without, rows = _one_finding_per_row(w)
    img1, pairs, bits = render_rows(with_f, rows, spec, size, np.random.default_rng(1))
    img0, _, _ = render_rows(without, rows, spec, size, np.random.default_rng(1))
    assert sorted(pairs[:, 0].tolist()) == rows.tolist() and (pairs[:, 0] == pairs[:, 1]).all()
    masks = np.unpackbits(bits, axis=1, count=size * size).astype(bool).reshape(-1, size, size)
    for (i, j), m in zip(pairs, masks):
        diff = np.abs(img1[i].astype(float) - img0[i].astype(float))
        name = FINDINGS[j]
        assert m.any(), f"{name}: empty mask"
        inside, outside = diff[m].mean(), diff[~m].mean()
        assert inside > 2.0, f"{name}: the finding barely changes the pixels inside its mask"
        assert inside > 4 * outside, f"{name}: change inside {inside:.2f} vs outside {outside:.2f}"


def test_boxes_enclose_masks(tmp_path):
    ds = World(cfg(tmp_path)).dataset(["chestxdet10"], "train", with_masks=True)
    checked = 0
    for i in range(len(ds)):
        it = ds[i]
        for j in np.flatnonzero(it["seg"].flatten(1).any(1).numpy()):
            ys, xs = np.nonzero(it["seg"][j].numpy())
            x0, y0, x1, y1 = it["boxes"][j].tolist()
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            checked += 1
        absent = ~it["seg"].flatten(1).any(1)
        assert np.isnan(it["boxes"][absent].numpy()).all()
    assert checked > 0


def _image_features(ds):
    x = np.stack([ds[i]["image"][0].numpy() for i in range(len(ds))])
    gy, gx = np.diff(x, axis=1), np.diff(x, axis=2)
    q = np.percentile(x.reshape(len(x), -1), [5, 25, 50, 75, 95], axis=1).T
    return np.column_stack([x.mean((1, 2)), x.std((1, 2)), q, (gy ** 2).mean((1, 2)),
                            (gx ** 2).mean((1, 2))])


def _source_accuracy(tmp_path, h):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    w = World(cfg(tmp_path, heterogeneity=h, n_per_source=120))
    parts = [w.dataset([s], sp) for s in PRETRAIN_SOURCES for sp in ("train", "test")]
    feats = np.concatenate([_image_features(d) for d in parts])
    y = np.concatenate([np.full(len(d), k // 2) for k, d in enumerate(parts)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return cross_val_score(clf, feats, y, cv=5).mean()


def test_heterogeneity_zero_makes_sources_indistinguishable(tmp_path):
    chance = 1 / len(PRETRAIN_SOURCES)
    assert _source_accuracy(tmp_path, 0.0) < chance + 0.12


def test_heterogeneity_one_makes_sources_easy_to_tell_apart(tmp_path):
    assert _source_accuracy(tmp_path, 1.0) > 0.8


def test_prevalences_follow_torchxrayvision_metadata(tmp_path):
    # slow, obvious reference: count ChestX-ray14 labels straight from the shipped CSV
    path = priors.txv_data_dir() / "Data_Entry_2017_v2020.csv.gz"
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()[1:]
    effusion = sum("Effusion" in ln.split(",")[1] for ln in lines) / len(lines)
    infil = sum("Infiltration" in ln.split(",")[1] for ln in lines) / len(lines)
    w = World(cfg(tmp_path, n_per_source=4000))
    assert w.prior("chestxray14")[FINDINGS.index("pleural effusion")] == pytest.approx(
        effusion, rel=1e-6)
    # "infiltration" is defined broadly there (sources.BROAD_DEFINITIONS): the narrow finding
    # is rarer than the label, and the label's share of images is the real one
    j = FINDINGS.index("infiltration")
    assert w.prior("chestxray14")[j] < infil
    shown = w.population("chestxray14").truth[:, [j] + [FINDINGS.index(c) for c in (
        "consolidation", "edema", "pneumonia")]].any(axis=1).mean()
    assert shown == pytest.approx(infil, abs=0.03)
    truth = w.population("chestxray14").truth
    np.testing.assert_allclose(truth.mean(0), w.prior("chestxray14"), atol=0.04)
    # heterogeneity 0: every source draws from the same pooled prior
    w0 = World(cfg(tmp_path, heterogeneity=0.0))
    np.testing.assert_allclose(w0.prior("vindr"), w0.prior("shenzhen"))
    assert not np.allclose(w.prior("vindr"), w.prior("chexpert"))


def test_reports_agree_with_labels(tmp_path):
    w = World(cfg(tmp_path))
    ds = w.dataset(["mimic"], "train")
    for i in range(len(ds)):
        report, triplets = w.report("mimic", int(ds.world_rows[i]))
        assert ds.reports[i] == report == ds[i]["text"]
        present = {t.entity for t in triplets if t.exists}
        uncertain = {t.entity for t in triplets if t.position == "uncertain"}
        for c, y in zip(ds.classes, ds.table.labels[i]):
            if c == "no finding":
                continue
            if y == 1:
                assert c in present, (report, c)
            elif np.isnan(y):
                assert c in uncertain, (report, c)
            else:
                assert c not in present, (report, c)
    with pytest.raises(ValueError, match="no reports"):
        w.report("vindr", 0)


def test_cache_is_keyed_and_a_corrupt_chunk_is_rebuilt(tmp_path):
    c = cfg(tmp_path)
    w = World(c)
    rows = np.arange(min(CHUNK, w.size("siim")))
    k64 = w.chunk_params("siim", 0, rows)
    k128 = World(c.replace(image_size=128)).chunk_params("siim", 0, rows)
    assert k64 != k128 and k64["image_size"] == 64
    first = w.images("siim", rows).copy()
    folder = next((tmp_path / "world").glob("siim-*"))
    path = folder / "images.npy"
    raw = bytearray(path.read_bytes())
    raw[-10:] = bytes(10)  # corrupt the last pixels
    path.write_bytes(bytes(raw))
    again = World(c).images("siim", rows)
    np.testing.assert_array_equal(first, again)
    assert World(c).images("siim", rows[:3]).shape == (3, 64, 64)


def test_bad_source_or_split_fails_clearly(tmp_path):
    w = World(cfg(tmp_path))
    with pytest.raises(ValueError, match="unknown embedded source 'mimc'"):
        w.dataset(["mimc"], "train")
    with pytest.raises(ValueError, match="split = 'training'"):
        w.dataset(["mimic"], "training")


def test_preview_cli_writes_a_grid(tmp_path):
    from unichest_lib.data.world.__main__ import main

    out = tmp_path / "grid.png"
    assert main(["preview", "--profile", "smoke", "--out", str(out), "--n", "2",
                 "--set", f"cache_dir={tmp_path}"]) == 0
    assert out.stat().st_size > 10_000


def test_embedded_data_cards_are_current_and_readable():
    from unichest_lib.data import cards
    from unichest_lib.data.world.card_text import card_text

    stats = priors.real_statistics(PRIORS_CACHE)
    for s in SPECS:
        path = cards.CARDS_DIR / f"embedded_{s}.md"
        assert path.read_text(encoding="utf-8") == card_text(s, stats), (
            f"{path.name} is stale: run python -m unichest_lib.data.world cards")
        meta, body = cards.read_card(path)
        assert meta["kind"] == "embedded" and meta["label_space"] == list(L.EMBEDDED_LABEL_SPACES[s])
        assert "SYNTHETIC" in meta["notice"] and "not a clinical claim" in body.splitlines()[2]


def test_world_fields_name_every_config_field_the_world_code_reads():
    """``world_of`` shares one World between configurations that agree on WORLD_FIELDS; a
    field read by the world's code but missing there would hand out another world's data."""
    import ast

    from unichest_lib.config import Config
    from unichest_lib.data import world as world_pkg

    fields = {f.name for f in __import__("dataclasses").fields(Config)}
    read = set()
    for path in Path(world_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in fields:
                base = node.value
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if name in ("cfg", "config"):
                    read.add(node.attr)
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr"
                    and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
                read.add(node.args[1].value)  # getattr(cfg, "field")
    assert read and read <= set(world_pkg.WORLD_FIELDS), sorted(read - set(world_pkg.WORLD_FIELDS))


def test_datasets_share_one_world_per_world_configuration(tmp_path):
    from unichest_lib.data import make_dataset
    from unichest_lib.data.world import world_of

    c = cfg(tmp_path, n_per_source=40, image_size=32)
    assert world_of(c) is world_of(c.replace(seed=5, lr=1e-3, K=2))  # training fields: same world
    assert world_of(c) is not world_of(c.replace(heterogeneity=0.0))
    a = make_dataset(c, ["chexpert"], "train")
    b = make_dataset(c.replace(seed=3), ["chexpert"], "train")
    assert a is not b and a.table is not b.table  # datasets are new objects (texts are edited)
    np.testing.assert_array_equal(a[0]["image"], b[0]["image"])
    # a fresh World gives the same pixels and labels as the shared one
    fresh = World(c).dataset(["chexpert"], "train")
    np.testing.assert_array_equal(fresh.table.labels, a.table.labels)
    np.testing.assert_array_equal(fresh[3]["image"], a[3]["image"])
