"""The nine parsers of the real datasets: a dataset's files -> its *frame*.

A frame has one row per image: the image ``path``, the ``patient`` id, the dataset's own
label columns (1 / 0 / NaN, named as in :data:`~.registry.LABELS`) and, for report sources,
the ``report``. ``torchxrayvision`` parses the metadata (its bundled copy where it ships one);
ChestX-Det10, which it lacks, is read from its JSON. :data:`PARSERS` maps each source key to
its parser.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ...config import ConfigError
from ..labels import canonical
from .harmonise import check_label_values
from .registry import CHESTXDET10_LABELS, CHEX_COLS, FRONTAL, REAL_DATASETS

log = logging.getLogger(__name__)

_CHEX = list(CHEX_COLS)  # a list: pandas selects columns with it


def _xrv():
    import torchxrayvision as xrv

    return xrv.datasets


def _views(opts) -> list[str]:
    v = opts.get("views", list(FRONTAL))
    return [v] if isinstance(v, str) else list(v)


def _csv(opts, key="csvpath"):
    return opts.get(key, _xrv().USE_INCLUDED_FILE)


def require_columns(path, expected: Sequence[str], dataset: str) -> None:
    """A clear error when the CSV at ``path`` lacks columns the parser needs."""
    try:
        have = set(pd.read_csv(path, nrows=0).columns)
    except Exception as e:
        raise ValueError(f"dataset {dataset!r}: cannot read CSV {str(path)!r}: {e}") from None
    miss = [c for c in expected if c not in have]
    if miss:
        raise ValueError(f"dataset {dataset!r}: CSV {str(path)!r} lacks column(s) {miss}; "
                         f"expected at least {list(expected)}")


def _frame(paths, patients, labels, names, reports=None) -> pd.DataFrame:
    f = pd.DataFrame(np.asarray(labels, np.float32).reshape(len(paths), -1), columns=list(names))
    f.insert(0, "path", list(paths))
    f.insert(1, "patient", list(patients))
    if reports is not None:
        f.insert(2, "report", list(reports))
    return f


def _nih(opts) -> pd.DataFrame:
    if "csvpath" in opts:
        require_columns(opts["csvpath"], ["Image Index", "Finding Labels", "Patient ID",
                                          "View Position", "Patient Age"], "chestxray14")
    d = _xrv().NIH_Dataset(opts["imgpath"], csvpath=_csv(opts), views=_views(opts),
                           unique_patients=False)
    paths = [os.path.join(opts["imgpath"], x) for x in d.csv["Image Index"]]
    return _frame(paths, d.csv["patientid"], d.labels, d.pathologies)


_UNCERTAIN = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}


def _chexpert_labels(raw: pd.DataFrame, opts, dataset: str) -> np.ndarray:
    """CheXpert-labeller columns -> 1/0/NaN under the ``uncertain`` and ``blank`` policies.

    ``raw`` holds the label columns as the CSV writes them (:func:`_raw_chexpert_columns`):
    torchxrayvision zeroes every label of a "No Finding" row in its own copy, overwriting
    explicit 1 and -1 (MIMIC's Support Devices too, which the labeller's No Finding excludes).
    Here "No Finding" = 1 only turns the blanks of its row into negatives (Support Devices'
    excepted), which matters under ``blank: missing``."""
    unc = opts.get("uncertain", "ignore")
    blank = opts.get("blank", "negative")
    if unc not in _UNCERTAIN or blank not in ("negative", "missing"):
        raise ConfigError(f"dataset {dataset!r}: uncertain = {unc!r} (use ignore, ones, zeros) "
                          f"/ blank = {blank!r} (use negative, missing)")
    check_label_values(raw, dataset, _CHEX, allowed=(-1.0, 0.0, 1.0))
    r = raw[_CHEX].to_numpy(np.float32)
    v = np.where(r == -1, _UNCERTAIN[unc], r)
    if blank == "negative":
        fill = np.isnan(r)
    else:
        implied = np.array([c not in ("No Finding", "Support Devices") for c in _CHEX])
        fill = np.isnan(r) & (r[:, [_CHEX.index("No Finding")]] == 1) & implied
    return np.where(fill, 0.0, v)


def _raw_chexpert_columns(csvpath, rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The label columns of ``csvpath`` as written, one row per row of ``rows`` (the
    torchxrayvision frame), matched on ``keys``."""
    raw = pd.read_csv(csvpath, usecols=keys + _CHEX).drop_duplicates(keys)
    return rows[keys].merge(raw, on=keys, how="left")


def _chexpert(opts) -> pd.DataFrame:
    csvpath = _csv(opts)
    if "csvpath" in opts:
        require_columns(csvpath, ["Path", "Frontal/Lateral", "AP/PA"] + _CHEX, "chexpert")
        check_label_values(pd.read_csv(csvpath, usecols=_CHEX), "chexpert", _CHEX,
                           allowed=(-1.0, 0.0, 1.0))
        if not any(k in os.path.basename(str(csvpath)) for k in ("train", "valid")):
            raise ValueError(f"dataset 'chexpert': csvpath {csvpath!r} must be CheXpert's "
                             "train.csv or valid.csv (torchxrayvision reads the patient id "
                             "from the 'train/' or 'valid/' part of each Path)")
    d = _xrv().CheX_Dataset(opts["imgpath"], csvpath=csvpath, views=_views(opts),
                            unique_patients=False)
    rel = d.csv["Path"].str.replace("CheXpert-v1.0-small/", "").str.replace("CheXpert-v1.0/", "")
    paths = [os.path.join(opts["imgpath"], x) for x in rel]
    raw = _raw_chexpert_columns(d.csvpath, d.csv, ["Path"])
    return _frame(paths, d.csv["patientid"], _chexpert_labels(raw, opts, "chexpert"), _CHEX)


def _mimic(opts) -> pd.DataFrame:
    for key, cols in (("csvpath", ["subject_id", "study_id"] + _CHEX),
                      ("metacsvpath", ["subject_id", "study_id", "dicom_id", "ViewPosition"])):
        if key not in opts:
            raise ConfigError(f"dataset 'mimic' needs {key} (MIMIC-CXR-JPG's "
                              f"{'mimic-cxr-2.0.0-chexpert.csv.gz' if key == 'csvpath' else 'mimic-cxr-2.0.0-metadata.csv.gz'}; "
                              f"{REAL_DATASETS['mimic'].access})")
        require_columns(opts[key], cols, "mimic")
    check_label_values(pd.read_csv(opts["csvpath"], usecols=_CHEX), "mimic", _CHEX,
                       allowed=(-1.0, 0.0, 1.0))
    d = _xrv().MIMIC_Dataset(opts["imgpath"], opts["csvpath"], opts["metacsvpath"],
                             views=_views(opts), unique_patients=False)
    c = d.csv
    subj, study = c["subject_id"].astype(str), c["study_id"].astype(str)
    paths = [os.path.join(opts["imgpath"], f"p{s[:2]}", f"p{s}", f"s{t}", f"{i}.jpg")
             for s, t, i in zip(subj, study, c["dicom_id"].astype(str))]
    reports = mimic_reports(opts.get("reportpath"), subj, study)
    raw = _raw_chexpert_columns(opts["csvpath"], c, ["subject_id", "study_id"])
    return _frame(paths, subj, _chexpert_labels(raw, opts, "mimic"), _CHEX, reports)


def mimic_reports(root, subjects, studies) -> list[str | None]:
    """The official MIMIC-CXR report of each study, read from
    ``<root>/files/p10/p10000032/s50414267.txt`` (or ``<root>/p10/...``); None when absent."""
    if root is None:
        return [None] * len(subjects)
    base = Path(root) / "files" if (Path(root) / "files").is_dir() else Path(root)
    out: list[str | None] = []
    for s, t in zip(subjects, studies):
        p = base / f"p{s[:2]}" / f"p{s}" / f"s{t}.txt"
        out.append(p.read_text(encoding="utf-8", errors="replace") if p.is_file() else None)
    n = sum(r is not None for r in out)
    if n < len(out):
        log.info("mimic: %d of %d studies have a report file under %s", n, len(out), base)
    return out


def _vindr(opts) -> pd.DataFrame:
    k = opts.get("min_readers", 1)
    if k not in (1, 2, 3):
        raise ConfigError(f"dataset 'vindr': min_readers = {k!r}; use 1 (a finding counts if any "
                          "of the three radiologists marked it) or 2 (at least two agree)")
    if "csvpath" in opts:
        require_columns(opts["csvpath"], ["image_id", "class_name"] + (["rad_id"] if k > 1 else []),
                        "vindr")
    d = _xrv().VinDr_Dataset(opts["imgpath"], csvpath=_csv(opts))
    c = d.csv
    nofind = c["class_name"].str.lower().eq("no finding").to_numpy(np.float32)
    found = d.labels
    if k > 1:  # keep the findings at least k distinct radiologists marked ("No finding" as is)
        votes = d.rawcsv.groupby(["image_id", "class_name"])["rad_id"].nunique()
        kept = votes[votes >= k].reset_index().groupby("image_id")["class_name"].agg("|".join)
        names = kept.reindex(c["image_id"]).fillna("").str.lower().to_numpy(str)
        found = np.column_stack([  # torchxrayvision's rule: the name or a synonym is a substring
            np.any([np.char.find(names, s.lower()) >= 0 for s in [p, *d.mapping.get(p, [])]], 0)
            for p in d.pathologies]).astype(np.float32)
    labels = np.column_stack([found, nofind])
    paths = [os.path.join(opts["imgpath"], f"{i}.dicom") for i in c["image_id"]]
    # VinDr publishes no patient ids: each image is its own "patient" (see data card)
    return _frame(paths, c["image_id"], labels, [str(p) for p in d.pathologies] + ["No finding"])


#: Where Open-I's view of each image comes from (``views_from``): torchxrayvision's bundled
#: t-SNE-derived views (the default), its bundled DICOM metadata ("View Position"), or nowhere
#: ("all": keep every image of the archive, e.g. one whose image ids those bundled tables,
#: keyed by the release's ids, do not list; ``views`` is then not used).
OPENI_VIEWS_FROM = ("tsne", "dicom", "all")


def _openi(opts) -> pd.DataFrame:
    xml = opts.get("xmlpath", _xrv().USE_INCLUDED_FILE)
    src = opts.get("views_from", "tsne")
    if src not in OPENI_VIEWS_FROM:
        raise ConfigError(f"dataset 'openi': views_from = {src!r}; use one of "
                          f"{', '.join(OPENI_VIEWS_FROM)}")
    d = _xrv().Openi_Dataset(opts["imgpath"], xmlpath=xml,
                             views=["*"] if src == "all" else _views(opts),
                             use_tsne_derived_view=src == "tsne", unique_patients=False)
    c = d.csv
    paths = [os.path.join(opts["imgpath"], f"{i}.png") for i in c["imageid"]]
    reports = openi_reports(d.xmlpath)
    return _frame(paths, c["uid"], d.labels, d.pathologies, [reports.get(u) for u in c["uid"]])


@lru_cache(maxsize=2)
def openi_reports(xmlpath: str) -> dict[str, str]:
    """Open-I report id -> "FINDINGS ... IMPRESSION ..." text, read from the XML archive."""
    out = {}
    with tarfile.open(xmlpath, "r:gz") as tar:
        for m in tar.getmembers():
            if not m.name.endswith(".xml"):
                continue
            root = ET.parse(tar.extractfile(m)).getroot()
            parts = [f"{n.get('Label', '').upper()}: {n.text.strip()}"
                     for n in root.iter("AbstractText")
                     if n.get("Label", "").upper() in ("FINDINGS", "IMPRESSION") and n.text]
            out[root.find("uId").attrib["id"]] = " ".join(parts)
    return out


def _shenzhen(opts) -> pd.DataFrame:
    if not (Path(opts["imgpath"]) / "CXR_png").is_dir():
        raise FileNotFoundError(f"dataset 'shenzhen': expected the folder CXR_png inside "
                                f"{opts['imgpath']!r} (the ChinaSet_AllFiles layout); get it from "
                                f"{REAL_DATASETS['shenzhen'].access}")
    d = _xrv().NLMTB_Dataset(opts["imgpath"], views=["PA"])
    c = d.csv
    paths = [os.path.join(opts["imgpath"], "CXR_png", f) for f in c["fname"]]
    patients = c["fname"].str.rsplit("_", n=1).str[0]  # CHNCXR_0001_0.png -> CHNCXR_0001
    return _frame(paths, patients, d.labels, d.pathologies)


def _siim(opts) -> pd.DataFrame:
    if "csvpath" in opts:
        require_columns(opts["csvpath"], ["ImageId", " EncodedPixels"], "siim")
    xrvd = _xrv()
    xrvd._cache_dict.pop("siim_file_map", None)  # torchxrayvision caches one folder's walk
    d = xrvd.SIIM_Pneumothorax_Dataset(opts["imgpath"], csvpath=_csv(opts))
    # torchxrayvision tests the column against the string "-1": a file whose images are all
    # negative reads as integers (every image "positive"), and " -1" would not match either
    rle = d.csv[" EncodedPixels"].astype(str).str.strip()
    pos = (rle != "-1").to_numpy(np.float32)
    lab = pd.Series(pos, index=d.csv["ImageId"]).groupby(level=0).max()
    files = {}
    for root, _, names in os.walk(opts["imgpath"]):
        for n in names:
            files[n] = os.path.join(root, n)
    paths = [files.get(f"{i}.dcm", os.path.join(opts["imgpath"], f"{i}.dcm")) for i in lab.index]
    # no patient id in the challenge CSV: one image = one patient (see data card)
    return _frame(paths, lab.index, lab.to_numpy()[:, None], ["Pneumothorax"])


def _padchest(opts) -> pd.DataFrame:
    if "csvpath" in opts:
        require_columns(opts["csvpath"], ["ImageID", "PatientID", "Projection", "Labels",
                                          "PatientBirth", "StudyDate_DICOM"], "padchest")
    d = _xrv().PC_Dataset(opts["imgpath"], csvpath=_csv(opts), views=_views(opts),
                          unique_patients=False)
    paths = [os.path.join(opts["imgpath"], x) for x in d.csv["ImageID"]]
    return _frame(paths, d.csv["patientid"], d.labels, d.pathologies)


def _chestxdet10(opts) -> pd.DataFrame:
    """ChestX-Det10 (not in torchxrayvision): its JSON lists ``file_name``, ``syms`` (class
    names) and ``boxes`` ([x0, y0, x1, y1] in pixels of the 1024 px image) per image."""
    if "annotations" not in opts:
        raise ConfigError("dataset 'chestxdet10' needs annotations: <path of train.json or "
                          f"test.json> ({REAL_DATASETS['chestxdet10'].access})")
    try:
        items = json.loads(Path(opts["annotations"]).read_text(encoding="utf-8"))
        rows = [(it["file_name"], list(it.get("syms", [])), list(it.get("boxes", [])))
                for it in items]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"dataset 'chestxdet10': {opts['annotations']!r} is not a list of "
                         f"{{file_name, syms, boxes}} records ({type(e).__name__}: {e})") from None
    size = float(opts.get("original_size", 1024))
    labels = np.array([[float(c in syms) for c in CHESTXDET10_LABELS] for _, syms, _ in rows],
                      np.float32).reshape(len(rows), len(CHESTXDET10_LABELS))
    f = _frame([os.path.join(opts["imgpath"], n) for n, _, _ in rows],
               [Path(n).stem for n, _, _ in rows], labels, CHESTXDET10_LABELS)
    f["boxes"] = [[(canonical(s), *map(float, b), size, size) for s, b in zip(syms, boxes)]
                  for _, syms, boxes in rows]
    return f


#: The parser of each real dataset, by source key.
PARSERS: dict[str, Callable[[dict], pd.DataFrame]] = {
    "mimic": _mimic, "chestxray14": _nih, "chexpert": _chexpert, "vindr": _vindr,
    "shenzhen": _shenzhen, "openi": _openi, "siim": _siim, "padchest": _padchest,
    "chestxdet10": _chestxdet10,
}


__all__ = ["OPENI_VIEWS_FROM", "PARSERS", "mimic_reports", "openi_reports", "require_columns"]
