"""Real datasets parse torchxrayvision's shipped metadata and fail clearly on bad paths.

No real image is needed: tiny placeholder images are written at the expected paths."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from unichest_lib import data
from unichest_lib.data import real
from unichest_lib.data.real import images, parsers, registry
from unichest_lib.config import ConfigError, resolve


def write_yaml(tmp_path, spec):
    p = tmp_path / "real.yaml"
    p.write_text(yaml.safe_dump(spec))
    return str(p)


def png(path, value=128, size=(40, 30), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = np.linspace(0, value, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint16)
        Image.fromarray(arr).save(path)
    else:
        Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


N_IMAGES = 12


@pytest.fixture(scope="module")
def nih_dir(tmp_path_factory):
    """A ChestX-ray14 image folder holding placeholders for the first N_IMAGES rows only."""
    d = tmp_path_factory.mktemp("nih")
    f = real.load_frame("chestxray14", {"imgpath": str(d)})
    for p in f["path"].iloc[:N_IMAGES]:
        png(d / p.rsplit("/", 1)[1], value=200)
    return d


@pytest.fixture(scope="module")
def nih_frame(nih_dir):
    return real.load_frame("chestxray14", {"imgpath": str(nih_dir)})  # cached parse


@pytest.mark.parametrize("name", ["chestxray14", "chexpert"])
def test_shipped_metadata_splits_are_patient_disjoint(name, nih_dir):
    f = real.load_frame(name, {"imgpath": str(nih_dir)})
    split = real.patient_split(f["patient"], name)
    groups = {s: set(f["patient"][split == s]) for s in data.SPLITS}
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    frac = {s: np.mean(split == s) for s in data.SPLITS}
    assert abs(frac["test"] - 0.2) < 0.02 and abs(frac["valid"] - 0.1) < 0.02
    # several images per patient really exist, so disjointness is not trivial
    assert f["patient"].duplicated().sum() > 1000


def test_nih_labels_follow_the_finding_labels_column(nih_frame):
    raw = pd.read_csv(parsers._xrv().datapath + "/Data_Entry_2017_v2020.csv.gz")
    raw = raw.set_index("Image Index")["Finding Labels"]
    names = nih_frame["path"].str.rsplit("/", n=1).str[1]
    lab = real.harmonise(nih_frame, "chestxray14", ("pleural effusion", "hernia", "tuberculosis"))
    want = names.map(raw).str.contains("Effusion").to_numpy()
    assert np.array_equal(lab[:, 0] == 1, want)
    assert np.isnan(lab[:, 2]).all()  # a class the dataset does not observe is missing


def test_chexpert_uncertain_policies(tmp_path):
    rows = [{"Path": "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
             "Frontal/Lateral": "Frontal", "AP/PA": "PA", "Sex": "Male", "Age": 50}]
    csv = pd.DataFrame(rows)
    for c in registry.CHEX_COLS:
        csv[c] = np.nan
    csv["Edema"], csv["Pneumonia"] = -1.0, 1.0
    p = tmp_path / "train.csv"
    csv.to_csv(p, index=False)
    got = {}
    for policy in ("ignore", "ones", "zeros"):
        f = real.load_frame("chexpert", {"imgpath": str(tmp_path), "csvpath": str(p),
                                             "uncertain": policy})
        got[policy] = real.harmonise(f, "chexpert", ("edema", "pneumonia", "atelectasis"))[0]
    assert np.isnan(got["ignore"][0]) and got["ones"][0] == 1 and got["zeros"][0] == 0
    assert all(g[1] == 1 and g[2] == 0 for g in got.values())  # blank -> negative by default
    f = real.load_frame("chexpert", {"imgpath": str(tmp_path), "csvpath": str(p),
                                         "blank": "missing"})
    assert np.isnan(real.harmonise(f, "chexpert", ("atelectasis",))[0, 0])


def test_vindr_nodule_mass_positive_is_missing_for_both():
    f = pd.DataFrame({"Nodule/Mass": [1.0, 0.0]})
    f = f.assign(**{c: 0.0 for c in registry.LABELS["vindr"] if c != "Nodule/Mass"})
    lab = real.harmonise(f, "vindr", ("nodule", "mass"))
    assert np.isnan(lab[0]).all() and (lab[1] == 0).all()


def nih_config(tmp_path, nih_dir, on_missing="skip"):
    spec = {"datasets": {"chestxray14": {"imgpath": str(nih_dir), "on_missing": on_missing}},
            "split": {"valid": 0.0, "test": 0.0}}
    return resolve("smoke", data=write_yaml(tmp_path, spec))


def test_make_dataset_reads_placeholder_images(tmp_path, nih_dir):
    cfg = nih_config(tmp_path, nih_dir)
    ds = data.make_dataset(cfg, ["chestxray14"], "train")
    assert len(ds) == N_IMAGES and ds.sources == ("chestxray14",)
    assert ds.classes == real.observed_classes("chestxray14")
    item = ds[0]
    assert item["image"].shape == (1, cfg.image_size, cfg.image_size)
    assert abs(float(item["image"].mean()) - 200 / 255) < 1e-3
    assert item["mask"].all() and isinstance(item["text"], str)
    batch = next(iter(data.make_loader(ds, cfg, train=False)))
    assert batch["image"].shape[0] == 12


def test_missing_image_is_a_clear_error_naming_file_and_access(tmp_path, nih_dir):
    cfg = nih_config(tmp_path, nih_dir, on_missing="error")
    with pytest.raises(FileNotFoundError, match=r"missing, e\.g\..*nihcc"):
        data.make_dataset(cfg, ["chestxray14"], "train")


def test_corrupt_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="x.png.*corrupt"):
        images.read_image(str(bad), 32, dataset="chestxray14")
    with pytest.raises(FileNotFoundError, match="nope.png.*chestxray14"):
        images.read_image(str(tmp_path / "nope.png"), 32, dataset="chestxray14")


def test_16_bit_and_rgb_images_become_grayscale_0_1(tmp_path, caplog):
    png(tmp_path / "a.png", value=4000, mode="I;16")
    a = images.read_image(str(tmp_path / "a.png"), 32)
    assert a.shape == (32, 32) and a.dtype == np.float32 and 0 <= a.min() < 0.05 and a.max() > 0.95
    png(tmp_path / "b.png", value=51, mode="RGB", size=(64, 48))
    with caplog.at_level(logging.INFO):
        b = images.read_image(str(tmp_path / "b.png"), 32, dataset="openi")
    assert np.allclose(b, 51 / 255, atol=2e-3) and "grayscale" in caplog.text


def test_yaml_errors_name_the_problem(tmp_path):
    cfg = lambda spec: resolve("smoke", data=write_yaml(tmp_path, spec))
    with pytest.raises(ConfigError, match="unknown dataset 'chexpret'.*did you mean 'chexpert'"):
        data.make_dataset(cfg({"datasets": {"chexpret": {"imgpath": str(tmp_path)}}}), ["chexpert"], "train")
    with pytest.raises(FileNotFoundError, match="does not exist.*physionet.org/content/vindr"):
        data.make_dataset(cfg({"datasets": {"vindr": {"imgpath": str(tmp_path / "no")}}}), ["vindr"], "train")
    with pytest.raises(ConfigError, match="no entry for source"):
        data.make_dataset(cfg({"datasets": {"siim": {"imgpath": str(tmp_path)}}}), ["vindr"], "train")
    with pytest.raises(ConfigError, match="unknown option"):
        data.make_dataset(cfg({"datasets": {"siim": {"imgpath": str(tmp_path), "csv": "x"}}}), ["siim"], "train")
    with pytest.raises(ConfigError, match="neither 'embedded' nor"):
        data.make_dataset(resolve("smoke", data=str(tmp_path / "none.yaml")), ["siim"], "train")


def test_csv_missing_columns_names_them(tmp_path):
    p = tmp_path / "nih.csv"
    pd.DataFrame({"Image Index": ["a.png"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['Finding Labels'"):
        real.load_frame("chestxray14", {"imgpath": str(tmp_path), "csvpath": str(p)})


def test_mimic_reads_official_report_files(tmp_path):
    cols = registry.CHEX_COLS
    lab = pd.DataFrame([{"subject_id": 10000032, "study_id": 50414267, **{c: np.nan for c in cols}}])
    lab.loc[0, "Pleural Effusion"] = 1.0
    meta = pd.DataFrame([{"subject_id": 10000032, "study_id": 50414267, "dicom_id": "abc",
                          "ViewPosition": "PA", "StudyDate": 21800506}])
    lab.to_csv(tmp_path / "chexpert.csv", index=False)
    meta.to_csv(tmp_path / "meta.csv", index=False)
    rep = tmp_path / "reports" / "files" / "p10" / "p10000032" / "s50414267.txt"
    rep.parent.mkdir(parents=True)
    rep.write_text("FINDINGS: Small left pleural effusion. No pneumothorax.")
    png(tmp_path / "img" / "p10" / "p10000032" / "s50414267" / "abc.jpg")
    spec = {"datasets": {"mimic": {"imgpath": str(tmp_path / "img"),
                                   "csvpath": str(tmp_path / "chexpert.csv"),
                                   "metacsvpath": str(tmp_path / "meta.csv"),
                                   "reportpath": str(tmp_path / "reports")}},
            "split": {"valid": 0.0, "test": 0.0}}
    cfg = resolve("smoke", data=write_yaml(tmp_path, spec), cache_dir=str(tmp_path / "cache"))
    ds = data.make_dataset(cfg, ["mimic"], "train")
    assert ds.table.texts == ["left pleural effusion"]
    assert ds.reports[0].startswith("FINDINGS: Small left")  # the raw report is kept
    i = ds.classes.index("pleural effusion")
    assert ds[0]["labels"][i] == 1 and ds[0]["labels"][ds.classes.index("edema")] == 0


def test_shenzhen_and_chestxdet10_with_boxes(tmp_path):
    for f in ("CHNCXR_0001_0.png", "CHNCXR_0002_1.png"):
        png(tmp_path / "sz" / "CXR_png" / f, size=(64, 64))
    f = real.load_frame("shenzhen", {"imgpath": str(tmp_path / "sz")})
    assert f["Tuberculosis"].tolist() == [0, 1] and f["patient"].tolist() == ["CHNCXR_0001", "CHNCXR_0002"]
    png(tmp_path / "det" / "1.png", size=(1024, 1024))
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps([{"file_name": "1.png", "syms": ["Nodule"], "boxes": [[512, 256, 768, 512]]}]))
    spec = {"datasets": {"chestxdet10": {"imgpath": str(tmp_path / "det"), "annotations": str(ann)}},
            "split": {"valid": 0.0, "test": 0.0}}
    cfg = resolve("smoke", data=write_yaml(tmp_path, spec))
    item = data.make_dataset(cfg, ["chestxdet10"], "train", with_masks=True)[0]
    j = real.observed_classes("chestxdet10").index("nodule")
    s = cfg.image_size
    assert np.allclose(item["boxes"][j].numpy(), [s / 2, s / 4, 3 * s / 4, s / 2])
    assert item["seg"][j].sum() == (s // 4) ** 2 and item["seg"].sum() == item["seg"][j].sum()
    assert np.isnan(item["boxes"][0].numpy()).all()


def test_every_registry_label_exists_in_the_parsed_frames(nih_dir):
    for name in ("chestxray14", "siim", "vindr"):
        f = real.load_frame(name, {"imgpath": str(nih_dir)})
        assert set(registry.LABELS[name]) <= set(f.columns), name
