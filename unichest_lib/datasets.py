"""The paper's real datasets (Table III), harmonised onto the library's union label space.

Nothing here downloads anything: a user who has the datasets writes a small YAML file and points
``cfg.data`` at it::

    datasets:
      chestxray14: {imgpath: /data/nih/images}            # metadata CSV ships with torchxrayvision
      chexpert:    {imgpath: /data/CheXpert-v1.0, csvpath: /data/CheXpert-v1.0/train.csv,
                    uncertain: ignore}                      # U-Ignore (default), ones or zeros
      mimic:       {imgpath: /data/mimic-cxr-jpg/files, csvpath: .../mimic-cxr-2.0.0-chexpert.csv.gz,
                    metacsvpath: .../mimic-cxr-2.0.0-metadata.csv.gz, reportpath: /data/mimic-cxr}
      vindr:       {imgpath: /data/vindr/train}             # needs pydicom
    split: {valid: 0.1, test: 0.2}                          # optional, patient-level fractions

Each dataset is parsed by ``torchxrayvision``'s class for it (its bundled metadata is used where
it ships one) into a *frame*: one row per image with the image ``path``, the ``patient`` id, the
dataset's own label columns (1 / 0 / NaN) and, for report sources, the ``report``. The frame is
then relabelled onto the canonical classes with :func:`labels.canonical` (:func:`label_mapping`
shows every dataset label and where it went; labels with no class in the union are dropped and
listed), split into patient-disjoint train/valid/test by hashing the patient id, and wrapped in
the one :class:`~unichest_lib.samples.MultiSourceDataset` contract.

Options per dataset (all optional except ``imgpath``): ``csvpath`` (and ``metacsvpath``,
``reportpath`` for MIMIC-CXR, ``annotations`` for ChestX-Det10), ``views`` (default frontal:
``[PA, AP]``), ``on_missing`` (``error``, the default, or ``skip`` images that are not on disk,
with a logged count), and for CheXpert/MIMIC-CXR ``uncertain`` (``ignore`` = -1 becomes missing,
``ones``, ``zeros``; Irvin et al. 2019) and ``blank`` (``negative``, the default: a finding the
report does not mention is absent; or ``missing``).

Introduced in ``notebooks/00_data.ipynb``; see also ``data_cards/``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .config import Config, ConfigError
from .labels import ALL_CLASSES, canonical
from .samples import MultiSourceDataset, SampleTable, labels_to_text

log = logging.getLogger(__name__)

FRONTAL = ("PA", "AP")
SPLIT_FRACTIONS = {"valid": 0.1, "test": 0.2}  # the rest is train; by patient


@dataclass(frozen=True)
class RealDataset:
    """One real dataset: how to parse it and where to get it."""

    name: str  # source key, the same as the embedded world's
    title: str  # human name as in the paper's Table III
    access: str  # the page where a user requests / downloads it
    loader: Callable[[dict], pd.DataFrame]  # options -> frame (path, patient, labels.., report)
    options: tuple[str, ...]  # option names the YAML may give besides the common ones
    overrides: tuple[tuple[str, object], ...] = ()  # dataset label -> class(es) or None
    has_reports: bool = False
    has_boxes: bool = False
    needs: str = ""  # an extra package needed to read the images


COMMON_OPTIONS = ("imgpath", "views", "on_missing")


# ---- label harmonisation ----------------------------------------------------------------
def label_mapping(name: str) -> dict[str, tuple[str, ...]]:
    """Every label of dataset ``name`` -> the canonical classes it feeds (empty = dropped).

    Built from the dataset's own label names with :func:`labels.canonical`; the few labels it
    cannot map or maps ambiguously are set in the registry's ``overrides`` (e.g. VinDr-CXR's
    "Nodule/Mass" feeds both nodule and mass, see :func:`harmonise`).
    """
    spec = get(name)
    over = dict(spec.overrides)
    out = {}
    for lab in _LABELS[name]:
        if lab in over:
            v = over[lab]
            out[lab] = () if v is None else ((v,) if isinstance(v, str) else tuple(v))
            continue
        try:
            out[lab] = (canonical(lab),)
        except KeyError:
            out[lab] = ()
    return out


def label_mapping_table() -> pd.DataFrame:
    """All datasets' label mappings as one tidy table (dataset, label, class); for the book."""
    rows = [(n, lab, ", ".join(cs) if cs else "(dropped)")
            for n in REAL_DATASETS for lab, cs in label_mapping(n).items()]
    return pd.DataFrame(rows, columns=["dataset", "label", "class"])


def source_classes(name: str) -> tuple[str, ...]:
    """The canonical classes real dataset ``name`` observes, in :data:`labels.ALL_CLASSES` order."""
    seen = {c for cs in label_mapping(name).values() for c in cs}
    return tuple(c for c in ALL_CLASSES if c in seen)


def union_classes(names: Sequence[str]) -> tuple[str, ...]:
    """The union label space of several real datasets (the paper's ``c`` classes)."""
    seen = {c for n in names for c in source_classes(n)}
    return tuple(c for c in ALL_CLASSES if c in seen)


def harmonise(frame: pd.DataFrame, name: str, classes: Sequence[str]) -> np.ndarray:
    """The (N, len(classes)) label matrix of ``frame`` over ``classes``; NaN = missing.

    Several dataset labels feeding one class are OR-ed: 1 if any is 1, else NaN if any is
    missing, else 0. A label feeding *several* classes (VinDr's "Nodule/Mass") cannot say which
    one a positive is: its 1 becomes missing for each, its 0 stays negative for each. Classes
    the dataset does not observe are NaN.
    """
    mapping = label_mapping(name)
    check_label_values(frame, name, [lab for lab in mapping if lab in frame])
    out = np.full((len(frame), len(classes)), np.nan, dtype=np.float32)
    for j, c in enumerate(classes):
        cols = [(lab, len(cs) > 1) for lab, cs in mapping.items() if c in cs]
        if not cols:
            continue
        vals = np.stack([_ambiguous(frame[lab].to_numpy(np.float32), amb) for lab, amb in cols], 1)
        anypos = np.nan_to_num(vals, nan=0.0).max(1) > 0.5
        anynan = np.isnan(vals).any(1)
        out[:, j] = np.where(anypos, 1.0, np.where(anynan, np.nan, 0.0))
    return out


def check_label_values(frame: pd.DataFrame, name: str, columns: Sequence[str],
                       allowed=(0.0, 1.0)) -> None:
    """A clear error when a label column holds anything but ``allowed`` numbers or NaN (a
    stray 2 or "yes" would otherwise be read as positive or crash deep inside NumPy)."""
    for col in columns:
        raw = frame[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = raw[(num.isna() & raw.notna()) | (num.notna() & ~num.isin(allowed))]
        if len(bad):
            raise ValueError(f"dataset {name!r}: label column {col!r} holds {len(bad)} value(s) "
                             f"other than {[int(a) for a in allowed]} or blank, e.g. "
                             f"{bad.unique()[:3].tolist()}; fix the CSV (labels are 1 = present, "
                             "0 = absent, blank = not stated; CheXpert-style files: -1 = uncertain)")


def _ambiguous(v: np.ndarray, ambiguous: bool) -> np.ndarray:
    return np.where(v > 0.5, np.nan, v) if ambiguous else v


# ---- splits -----------------------------------------------------------------------------
def patient_split(patients: Sequence[str], source: str, fractions=None) -> np.ndarray:
    """"train"/"valid"/"test" per row, decided by a hash of (source, patient id) alone, so every
    image of a patient lands in the same split and the split never changes between runs."""
    fr = dict(SPLIT_FRACTIONS if fractions is None else fractions)
    bad = set(fr) - {"valid", "test"}
    if bad or not all(0 <= fr.get(k, 0) < 1 for k in ("valid", "test")) \
            or fr.get("valid", 0) + fr.get("test", 0) >= 1:
        raise ConfigError(f"split fractions {fractions!r} must be {{valid: f, test: g}} with "
                          "f, g >= 0 and f + g < 1")
    keys = np.asarray([f"{source}:{p}" for p in patients], dtype=object)
    u = pd.util.hash_array(keys).astype(np.float64) / 2.0**64
    v, t = fr.get("valid", 0.0), fr.get("test", 0.0)
    return np.where(u < t, "test", np.where(u < t + v, "valid", "train"))


# ---- YAML ------------------------------------------------------------------------------
def read_spec(path: str | os.PathLike) -> dict:
    """Read and validate a real-data YAML file; errors name the file, key and fix."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cfg.data = {str(path)!r} is neither 'embedded' nor an existing "
                          "YAML file describing real datasets (see unichest_lib.datasets)")
    try:
        spec = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the real-data YAML file {p}: {e}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("datasets"), dict):
        raise ConfigError(f"{p}: expected a mapping with a 'datasets:' mapping of dataset name "
                          f"-> options; known datasets: {', '.join(REAL_DATASETS)}")
    extra = set(spec) - {"datasets", "split", "image_size"}
    if extra:
        raise ConfigError(f"{p}: unknown top-level key(s) {sorted(extra)}; valid keys are "
                          "datasets, split, image_size")
    for name, opts in spec["datasets"].items():
        _check_options(p, name, opts)
    return spec


def _check_options(p: Path, name: str, opts) -> None:
    if name not in REAL_DATASETS:
        close = difflib.get_close_matches(str(name), list(REAL_DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{p}: unknown dataset {name!r}{hint}; known datasets: "
                          f"{', '.join(REAL_DATASETS)}")
    spec = REAL_DATASETS[name]
    if not isinstance(opts, dict) or "imgpath" not in opts:
        raise ConfigError(f"{p}: dataset {name!r} needs at least 'imgpath: <folder of images>' "
                          f"(get {spec.title} at {spec.access})")
    valid = COMMON_OPTIONS + spec.options
    bad = sorted(set(opts) - set(valid))
    if bad:
        raise ConfigError(f"{p}: dataset {name!r} has unknown option(s) {bad}; valid options: "
                          f"{', '.join(valid)}")
    if not Path(opts["imgpath"]).is_dir():
        raise FileNotFoundError(f"dataset {name!r}: image folder {opts['imgpath']!r} does not "
                                f"exist; download {spec.title} from {spec.access} and set its "
                                "imgpath in the YAML file")
    for key in ("csvpath", "metacsvpath", "annotations", "xmlpath"):
        if key in opts and not Path(opts[key]).is_file():
            raise FileNotFoundError(f"dataset {name!r}: {key} {opts[key]!r} is not a file "
                                    f"(get {spec.title} at {spec.access})")
    if opts.get("on_missing", "error") not in ("error", "skip"):
        raise ConfigError(f"dataset {name!r}: on_missing = {opts['on_missing']!r}; use "
                          "'error' or 'skip'")


# ---- building the dataset -----------------------------------------------------------------
def load_frame(name: str, opts: dict) -> pd.DataFrame:
    """The parsed frame of one dataset (cached per options): path, patient, report, labels."""
    key = {k: v for k, v in opts.items() if k != "on_missing"}  # not used by the parsers
    return _load_frame_cached(name, json.dumps(key, sort_keys=True, default=str)).copy()


@lru_cache(maxsize=16)
def _load_frame_cached(name: str, opts_json: str) -> pd.DataFrame:
    opts = json.loads(opts_json)
    frame = get(name).loader(opts)
    frame["patient"] = frame["patient"].astype(str)
    return frame.reset_index(drop=True)


def make_real_dataset(cfg: Config, sources: Sequence[str], split: str, *,
                      with_masks: bool = False) -> MultiSourceDataset:
    """The ``split`` of real datasets ``sources`` as described by the YAML file ``cfg.data``."""
    spec = read_spec(cfg.data)
    if spec.get("image_size") not in (None, cfg.image_size):
        raise ConfigError(f"{cfg.data}: image_size {spec['image_size']} differs from "
                          f"cfg.image_size {cfg.image_size}; set the config's image_size instead")
    missing = [s for s in sources if s not in spec["datasets"]]
    if missing:
        raise ConfigError(f"{cfg.data}: no entry for source(s) {missing}; add them under "
                          f"'datasets:' (known: {', '.join(REAL_DATASETS)})")
    if with_masks:
        nobox = [s for s in sources if not get(s).has_boxes]
        if nobox:
            raise ValueError(f"with_masks=True needs box annotations; real datasets {nobox} "
                             "have none here (use chestxdet10)")
    classes = union_classes(sources)
    parts = []
    for sid, name in enumerate(sources):
        opts = spec["datasets"][name]
        f = load_frame(name, opts)
        f = f[patient_split(f["patient"], name, spec.get("split")) == split]
        f = _check_images(f, name, opts.get("on_missing", "error"), split)
        parts.append((sid, name, f))
    return _to_dataset(parts, sources, classes, cfg.image_size, with_masks)


def _to_dataset(parts, sources, classes, size, with_masks) -> MultiSourceDataset:
    labels = np.concatenate([harmonise(f, n, classes) for _, n, f in parts]) if parts else \
        np.zeros((0, len(classes)), np.float32)
    source_ids = np.concatenate([np.full(len(f), sid, np.int64) for sid, _, f in parts])
    patients = np.concatenate([f["patient"].to_numpy(object) for _, _, f in parts])
    paths = [p for _, _, f in parts for p in f["path"]]
    names = [n for _, n, f in parts for _ in range(len(f))]
    mask = ~np.isnan(labels)
    reports = [r for _, _, f in parts for r in (f["report"] if "report" in f else [None] * len(f))]
    texts = [r if isinstance(r, str) and r.strip() else
             labels_to_text(np.nan_to_num(y), m, classes) for r, y, m in zip(reports, labels, mask)]
    table = SampleTable(classes=tuple(classes), sources=tuple(sources), labels=labels,
                        source_ids=source_ids, patients=patients, texts=texts)

    def image_fn(i: int) -> np.ndarray:
        return read_image(paths[i], size, dataset=names[i])

    masks_fn = None
    if with_masks:
        boxes = [b for _, _, f in parts for b in f["boxes"]]
        masks_fn = _BoxMasks(boxes, classes, size)
    ds = MultiSourceDataset(table, image_fn, masks_fn=masks_fn, name="+".join(sources))
    ds.reports, ds.paths = reports, paths  # raw report (or None) and image file of each row
    return ds


def _check_images(f: pd.DataFrame, name: str, on_missing: str, split: str) -> pd.DataFrame:
    """The rows of one source's ``split`` whose image file exists; raise (or, with
    ``on_missing: skip``, log and drop) when some do not."""
    exists = np.fromiter((os.path.isfile(p) for p in f["path"]), bool, len(f))
    if exists.all():
        return f
    miss = f["path"][~exists]
    if on_missing == "skip":
        log.warning("dataset %s: skipping %d of the %d %s images not on disk "
                    "(on_missing: skip), e.g. %s", name, len(miss), len(f), split, miss.iloc[0])
        return f[exists]
    raise FileNotFoundError(
        f"dataset {name!r}: {len(miss)} of the {len(f)} images of its {split} split are missing, "
        f"e.g. {miss.iloc[0]!r}; "
        f"download them from {get(name).access}, fix imgpath, or set 'on_missing: skip'")


class _BoxMasks:
    """(seg, boxes) of a row from its list of (class, x0, y0, x1, y1, width, height)."""

    def __init__(self, boxes, classes, size):
        self.boxes, self.classes, self.size = boxes, list(classes), size

    def __call__(self, i: int):
        s = self.size
        seg = np.zeros((len(self.classes), s, s), bool)
        out = np.full((len(self.classes), 4), np.nan, np.float32)
        for cls, x0, y0, x1, y1, w, h in self.boxes[i]:
            if cls not in self.classes:
                continue
            j = self.classes.index(cls)
            b = np.array([x0 * s / w, y0 * s / h, x1 * s / w, y1 * s / h], np.float32)
            a, c = int(b[0]), int(np.ceil(b[2]))
            seg[j, int(b[1]):int(np.ceil(b[3])), a:c] = True
            out[j] = b if np.isnan(out[j, 0]) else np.r_[np.minimum(out[j, :2], b[:2]),
                                                          np.maximum(out[j, 2:], b[2:])]
        return seg, out


# ---- images -----------------------------------------------------------------------------
_NOTED: set[tuple[str, str]] = set()


def read_image(path: str, size: int, *, dataset: str = "") -> np.ndarray:
    """The image at ``path`` as float32 (size, size) in 0..1: grayscale, centre-cropped to a
    square, resized bilinearly. 8-bit images are divided by 255; 16-bit and float images are
    min-max scaled; colour images are converted to grayscale (noted once per dataset); DICOM
    (``.dcm``/``.dicom``) needs ``pydicom`` and MONOCHROME1 is inverted."""
    from PIL import Image

    where = f" of dataset {dataset!r}" if dataset else ""
    if not os.path.isfile(path):
        url = f" (get it from {REAL_DATASETS[dataset].access})" if dataset in REAL_DATASETS else ""
        raise FileNotFoundError(f"image {path!r}{where} does not exist{url}")
    try:
        if path.lower().endswith((".dcm", ".dicom")):
            im = Image.fromarray(_read_dicom(path), mode="F")
        else:
            with Image.open(path) as f:
                f.load()
                im = _grayscale(f, dataset)
        return _square_resize(im, size)
    except (ImportError, FileNotFoundError):
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise ValueError(f"cannot read image {path!r}{where}: {type(e).__name__}: {e}; the file "
                         "is corrupt or not an image") from None


def _grayscale(im, dataset: str):
    """An 8-bit "L" image, or an "F" image min-max scaled to 0..1 for deeper pixel types."""
    from PIL import Image

    if im.mode in ("L", "1"):
        return im.convert("L")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.fromarray(_minmax(np.asarray(im).astype(np.float32)), mode="F")
    if (dataset, im.mode) not in _NOTED:
        _NOTED.add((dataset, im.mode))
        log.info("dataset %s: converting %s images to grayscale", dataset or "?", im.mode)
    return im.convert("L")


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _square_resize(im, size: int) -> np.ndarray:
    """Centre square crop, bilinear resize (PIL, with its fast reducing step), float 0..1."""
    from PIL import Image

    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s))
    if s != size:
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    a = np.asarray(im, dtype=np.float32)
    if im.mode == "L":
        a = a / 255.0
    return np.clip(a, 0.0, 1.0)


def _read_dicom(path: str) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImportError(f"reading the DICOM image {path!r} needs the package pydicom "
                          "(pip install pydicom)") from None
    ds = pydicom.dcmread(path)
    a = _minmax(ds.pixel_array.astype(np.float32))
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        a = 1.0 - a
    return a if a.ndim == 2 else a.mean(-1)


# ---- loaders, one per dataset (torchxrayvision parses the metadata) -----------------------
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


_CHEX_COLS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
              "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
              "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
_UNCERTAIN = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}


def _chexpert_labels(csv: pd.DataFrame, opts, dataset: str) -> np.ndarray:
    """CheXpert-labeller columns -> 1/0/NaN under the ``uncertain`` and ``blank`` policies."""
    unc = opts.get("uncertain", "ignore")
    blank = opts.get("blank", "negative")
    if unc not in _UNCERTAIN or blank not in ("negative", "missing"):
        raise ConfigError(f"dataset {dataset!r}: uncertain = {unc!r} (use ignore, ones, zeros) "
                          f"/ blank = {blank!r} (use negative, missing)")
    check_label_values(csv, dataset, _CHEX_COLS, allowed=(-1.0, 0.0, 1.0))
    raw = csv[_CHEX_COLS].to_numpy(np.float32)
    v = np.where(raw == -1, _UNCERTAIN[unc], raw)
    if blank == "negative":
        v = np.where(np.isnan(raw), 0.0, v)
    return v


def _chexpert(opts) -> pd.DataFrame:
    csvpath = _csv(opts)
    if "csvpath" in opts:
        require_columns(csvpath, ["Path", "Frontal/Lateral", "AP/PA"] + _CHEX_COLS, "chexpert")
        check_label_values(pd.read_csv(csvpath, usecols=_CHEX_COLS), "chexpert", _CHEX_COLS,
                           allowed=(-1.0, 0.0, 1.0))
        if not any(k in os.path.basename(str(csvpath)) for k in ("train", "valid")):
            raise ValueError(f"dataset 'chexpert': csvpath {csvpath!r} must be CheXpert's "
                             "train.csv or valid.csv (torchxrayvision reads the patient id "
                             "from the 'train/' or 'valid/' part of each Path)")
    d = _xrv().CheX_Dataset(opts["imgpath"], csvpath=csvpath, views=_views(opts),
                            unique_patients=False)
    rel = d.csv["Path"].str.replace("CheXpert-v1.0-small/", "").str.replace("CheXpert-v1.0/", "")
    paths = [os.path.join(opts["imgpath"], x) for x in rel]
    return _frame(paths, d.csv["patientid"], _chexpert_labels(d.csv, opts, "chexpert"), _CHEX_COLS)


def _mimic(opts) -> pd.DataFrame:
    for key, cols in (("csvpath", ["subject_id", "study_id"] + _CHEX_COLS),
                      ("metacsvpath", ["subject_id", "study_id", "dicom_id", "ViewPosition"])):
        if key not in opts:
            raise ConfigError(f"dataset 'mimic' needs {key} (MIMIC-CXR-JPG's "
                              f"{'mimic-cxr-2.0.0-chexpert.csv.gz' if key == 'csvpath' else 'mimic-cxr-2.0.0-metadata.csv.gz'}; "
                              f"{REAL_DATASETS['mimic'].access})")
        require_columns(opts[key], cols, "mimic")
    check_label_values(pd.read_csv(opts["csvpath"], usecols=_CHEX_COLS), "mimic", _CHEX_COLS,
                       allowed=(-1.0, 0.0, 1.0))
    d = _xrv().MIMIC_Dataset(opts["imgpath"], opts["csvpath"], opts["metacsvpath"],
                             views=_views(opts), unique_patients=False)
    c = d.csv
    subj, study = c["subject_id"].astype(str), c["study_id"].astype(str)
    paths = [os.path.join(opts["imgpath"], f"p{s[:2]}", f"p{s}", f"s{t}", f"{i}.jpg")
             for s, t, i in zip(subj, study, c["dicom_id"].astype(str))]
    reports = mimic_reports(opts.get("reportpath"), subj, study)
    return _frame(paths, subj, _chexpert_labels(c, opts, "mimic"), _CHEX_COLS, reports)


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
    if "csvpath" in opts:
        require_columns(opts["csvpath"], ["image_id", "class_name"], "vindr")
    d = _xrv().VinDr_Dataset(opts["imgpath"], csvpath=_csv(opts))
    c = d.csv
    nofind = c["class_name"].str.lower().eq("no finding").to_numpy(np.float32)
    labels = np.column_stack([d.labels, nofind])
    paths = [os.path.join(opts["imgpath"], f"{i}.dicom") for i in c["image_id"]]
    # VinDr publishes no patient ids: each image is its own "patient" (see data card)
    return _frame(paths, c["image_id"], labels, [str(p) for p in d.pathologies] + ["No finding"])


def _openi(opts) -> pd.DataFrame:
    xml = opts.get("xmlpath", _xrv().USE_INCLUDED_FILE)
    d = _xrv().Openi_Dataset(opts["imgpath"], xmlpath=xml, views=_views(opts),
                             use_tsne_derived_view=True, unique_patients=False)
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
    lab = pd.Series(d.labels[:, 0], index=d.csv["ImageId"]).groupby(level=0).max()
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


CHESTXDET10_LABELS = ("Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
                      "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax")


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


_LABELS: dict[str, tuple[str, ...]] = {
    "chestxray14": ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion",
                    "Emphysema", "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule",
                    "Pleural_Thickening", "Pneumonia", "Pneumothorax"),
    "chexpert": tuple(_CHEX_COLS),
    "mimic": tuple(_CHEX_COLS),
    "vindr": ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly",
              "Consolidation", "Effusion", "ILD", "Infiltration", "Lung Opacity", "Nodule/Mass",
              "Other Lesion", "Pleural_Thickening", "Pneumothorax", "Pulmonary Fibrosis",
              "No finding"),
    "shenzhen": ("Tuberculosis",),
    "openi": ("Atelectasis", "Calcified Granuloma", "Cardiomegaly", "Edema", "Effusion",
              "Emphysema", "Fibrosis", "Fracture", "Granuloma", "Hernia", "Infiltration",
              "Lung Lesion", "Lung Opacity", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia",
              "Pneumothorax"),
    "siim": ("Pneumothorax",),
    "padchest": ("Aortic Atheromatosis", "Aortic Elongation", "Atelectasis", "Bronchiectasis",
                 "Cardiomegaly", "Consolidation", "Costophrenic Angle Blunting", "Edema",
                 "Effusion", "Emphysema", "Fibrosis", "Flattened Diaphragm", "Fracture",
                 "Granuloma", "Hemidiaphragm Elevation", "Hernia", "Hilar Enlargement",
                 "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia",
                 "Pneumothorax", "Scoliosis", "Support Devices", "Tube", "Tuberculosis",
                 "Air Trapping"),
    "chestxdet10": CHESTXDET10_LABELS,
}

#: The nine real datasets of the paper's Table III, by the source keys the config uses.
REAL_DATASETS: dict[str, RealDataset] = {d.name: d for d in (
    RealDataset("mimic", "MIMIC-CXR", "https://physionet.org/content/mimic-cxr-jpg/2.0.0/",
                _mimic, ("csvpath", "metacsvpath", "reportpath", "uncertain", "blank"),
                has_reports=True),
    RealDataset("chestxray14", "ChestX-ray14",
                "https://nihcc.app.box.com/v/ChestXray-NIHCC", _nih, ("csvpath",)),
    RealDataset("chexpert", "CheXpert",
                "https://stanfordmlgroup.github.io/competitions/chexpert/", _chexpert,
                ("csvpath", "uncertain", "blank")),
    RealDataset("vindr", "VinDr-CXR", "https://physionet.org/content/vindr-cxr/1.0.0/", _vindr,
                ("csvpath",), overrides=(("Nodule/Mass", ("nodule", "mass")),), needs="pydicom"),
    RealDataset("shenzhen", "Shenzhen (NLM TB)",
                "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-chest-x-ray-image-data-sets",
                _shenzhen, ()),
    RealDataset("openi", "Open-I (Indiana University)", "https://openi.nlm.nih.gov/faq", _openi,
                ("xmlpath",), has_reports=True),
    RealDataset("siim", "SIIM-ACR Pneumothorax",
                "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation", _siim,
                ("csvpath",), needs="pydicom"),
    RealDataset("padchest", "PadChest", "https://bimcv.cipf.es/bimcv-projects/padchest/",
                _padchest, ("csvpath",), overrides=(("Tube", "support devices"),)),
    RealDataset("chestxdet10", "ChestX-Det10", "https://github.com/Deepwise-AILab/ChestX-Det10-Dataset",
                _chestxdet10, ("annotations", "original_size"), has_boxes=True),
)}


def get(name: str) -> RealDataset:
    """The registry entry of real dataset ``name``; a clear error for an unknown name."""
    if name not in REAL_DATASETS:
        raise KeyError(f"unknown real dataset {name!r}; known: {', '.join(REAL_DATASETS)}")
    return REAL_DATASETS[name]


__all__ = ["REAL_DATASETS", "RealDataset", "check_label_values", "get", "harmonise",
           "label_mapping", "label_mapping_table", "load_frame", "make_real_dataset",
           "mimic_reports", "openi_reports", "patient_split", "read_image", "read_spec",
           "require_columns", "source_classes", "union_classes"]
