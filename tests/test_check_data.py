"""``check-data``: a dry run of a real-data YAML counts images, patients, missing files and
labels of tiny fake datasets (a CheXpert ``train.csv`` tree and a Shenzhen folder), the way
``tests/test_data_real.py`` builds them; the expected numbers are counted from the rows the
fixture wrote, one by one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from unichest_lib import cli
from unichest_lib.config import ConfigError
from unichest_lib.data import real
from unichest_lib.data.real import registry

SPLIT = {"valid": 0.3, "test": 0.3}


def png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (40, 30), 100).save(path, format="PNG")


def write_yaml(tmp_path, datasets, name="real.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"datasets": datasets, "split": SPLIT}))
    return str(p)


@pytest.fixture()
def chexpert(tmp_path):
    """12 patients x 2 frontal images (+ one lateral image, which is not read); Edema is 1 on
    every third row, -1 (uncertain: missing under U-Ignore) on every fifth, else blank."""
    root = tmp_path / "chexpert"
    rows = []
    for p in range(1, 13):
        for s in (1, 2):
            rows.append({"Path": f"CheXpert-v1.0-small/train/patient{p:05d}/study{s}/view1_frontal.jpg",
                         "Frontal/Lateral": "Frontal", "AP/PA": "PA", "Sex": "Male", "Age": 50})
    rows.append({"Path": "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg",
                 "Frontal/Lateral": "Lateral", "AP/PA": "", "Sex": "Male", "Age": 50})
    csv = pd.DataFrame(rows)
    for c in registry.CHEX_COLS:
        csv[c] = np.nan
    csv.loc[::3, "Edema"] = 1.0
    csv.loc[1::5, "Edema"] = -1.0
    csv.loc[2, "Cardiomegaly"] = 0.0
    root.mkdir()
    csv.to_csv(root / "train.csv", index=False)
    for path in csv["Path"]:
        png(root / path.replace("CheXpert-v1.0-small/", ""))
    opts = {"imgpath": str(root), "csvpath": str(root / "train.csv")}
    return opts, csv[csv["Frontal/Lateral"] == "Frontal"]


@pytest.fixture()
def shenzhen(tmp_path):
    names = ["CHNCXR_0001_0.png", "CHNCXR_0002_1.png", "CHNCXR_0003_1.png"]
    for f in names:
        png(tmp_path / "sz" / "CXR_png" / f)
    return {"imgpath": str(tmp_path / "sz")}, names


def expected_counts(csv, root):
    """(split -> images, patients, missing) counted row by row from the fixture's CSV."""
    out = {s: [0, set(), 0] for s in ("train", "valid", "test")}
    for path in csv["Path"]:
        patient = path.split("train/patient")[1].split("/")[0]
        split = real.patient_split([patient], "chexpert", SPLIT)[0]
        out[split][0] += 1
        out[split][1].add(patient)
        out[split][2] += not (root / path.replace("CheXpert-v1.0-small/", "")).is_file()
    return {s: (n, len(p), m) for s, (n, p, m) in out.items()}


def test_counts_missing_files_and_label_coverage(tmp_path, chexpert, shenzhen):
    (opts, csv), (sz_opts, sz_names) = chexpert, shenzhen
    gone = csv["Path"].iloc[5].replace("CheXpert-v1.0-small/", "")
    (tmp_path / "chexpert" / gone).unlink()
    check = real.check_data(write_yaml(tmp_path, {"chexpert": opts, "shenzhen": sz_opts}))

    want = expected_counts(csv, tmp_path / "chexpert")
    assert sum(n for n, _, _ in want.values()) == 24 and all(n for n, _, _ in want.values())
    got = check.counts.set_index(["source", "split"])
    for s, (n, patients, missing) in want.items():
        assert tuple(got.loc[("chexpert", s), ["images", "patients", "missing"]]) == \
            (n, patients, missing)
    assert got.loc["shenzhen", "images"].sum() == len(sz_names)
    assert check.n_missing == 1 and not check.ok and check.problems == {}
    assert check.missing_example["chexpert"].endswith(gone)

    lab = check.labels.set_index(["source", "class"])
    edema = csv["Edema"].tolist()
    assert tuple(lab.loc[("chexpert", "edema")]) == (
        sum(v == 1 for v in edema), sum(v != 1 and v != -1 for v in edema),
        sum(v == -1 for v in edema))  # blank = negative, -1 = missing (U-Ignore)
    assert tuple(lab.loc[("shenzhen", "tuberculosis")]) == (2, 1, 0)

    text = check.report()
    assert "1 image file(s) missing" in text and gone in text and "edema" in text


def test_a_dataset_that_cannot_be_read_is_reported_and_the_others_checked(tmp_path, shenzhen):
    spec = {"chexpert": {"imgpath": str(tmp_path / "nowhere")}, "shenzhen": shenzhen[0]}
    check = real.check_data(write_yaml(tmp_path, spec))
    assert list(check.problems) == ["chexpert"] and "does not exist" in check.problems["chexpert"]
    assert check.counts["source"].unique().tolist() == ["shenzhen"] and not check.ok
    assert "chexpert: NOT READABLE" in check.report()


def test_a_bad_yaml_raises_a_config_error(tmp_path, shenzhen):
    with pytest.raises(ConfigError, match="unknown dataset 'chexpret'"):
        real.check_data(write_yaml(tmp_path, {"shenzhen": shenzhen[0], "chexpret": {"imgpath": "x"}}))


def test_the_verb_prints_the_report_and_exits_by_what_it_found(tmp_path, chexpert, shenzhen,
                                                                 capsys):
    good = write_yaml(tmp_path, {"chexpert": chexpert[0], "shenzhen": shenzhen[0]})
    assert cli.main(["check-data", good, "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "every image file is on disk" in out and "images (patients) per split" in out
    assert cli.main(["check-data", "--data", good]) == 0
    (tmp_path / "chexpert" / "train" / "patient00002" / "study1" / "view1_frontal.jpg").unlink()
    assert cli.main(["check-data", good]) == 1
    cap = capsys.readouterr()
    assert "1 image file(s) missing" in cap.out and "patient00002" in cap.out and cap.err == ""

    bad = write_yaml(tmp_path, {"chexpret": {"imgpath": str(tmp_path)}}, "bad.yaml")
    assert cli.main(["check-data", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "chexpret" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["check-data", "--profile", "smoke"]) == 2  # the embedded world: no YAML
    assert "real-data YAML" in capsys.readouterr().err
