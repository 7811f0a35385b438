"""The registry of the paper's real datasets (Table III): what each is called, where to get
it, which options its YAML entry takes and which labels it has; and the YAML file itself.

Introduced in ``notebooks/00_data.ipynb``; see also ``data_cards/``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from ...config import ConfigError

#: The frontal views read by default (``views`` in a dataset's YAML entry).
FRONTAL = ("PA", "AP")


@dataclass(frozen=True)
class RealDataset:
    """One real dataset: what it is called and where to get it (its parser is
    :data:`unichest_lib.data.real.parsers.PARSERS` ``[name]``)."""

    name: str  # source key, the same as the embedded world's
    title: str  # human name as in the paper's Table III
    access: str  # the page where a user requests / downloads it
    options: tuple[str, ...]  # option names the YAML may give besides the common ones
    overrides: tuple[tuple[str, object], ...] = ()  # dataset label -> class(es) or None
    has_reports: bool = False
    has_boxes: bool = False
    needs: str = ""  # an extra package needed to read the images


#: The options every dataset's YAML entry may give.
COMMON_OPTIONS = ("imgpath", "views", "on_missing")

#: The CheXpert labeller's columns (CheXpert and MIMIC-CXR).
CHEX_COLS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
             "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
             "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices")
CHESTXDET10_LABELS = ("Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
                      "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax")

#: Each dataset's own label names (the columns its parser returns), before harmonisation.
LABELS: dict[str, tuple[str, ...]] = {
    "chestxray14": ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion",
                    "Emphysema", "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule",
                    "Pleural_Thickening", "Pneumonia", "Pneumothorax"),
    "chexpert": CHEX_COLS,
    "mimic": CHEX_COLS,
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
                ("csvpath", "metacsvpath", "reportpath", "uncertain", "blank"),
                has_reports=True),
    RealDataset("chestxray14", "ChestX-ray14",
                "https://nihcc.app.box.com/v/ChestXray-NIHCC", ("csvpath",)),
    RealDataset("chexpert", "CheXpert",
                "https://stanfordmlgroup.github.io/competitions/chexpert/",
                ("csvpath", "uncertain", "blank")),
    RealDataset("vindr", "VinDr-CXR", "https://physionet.org/content/vindr-cxr/1.0.0/",
                ("csvpath", "min_readers"), overrides=(("Nodule/Mass", ("nodule", "mass")),),
                needs="pydicom"),
    RealDataset("shenzhen", "Shenzhen (NLM TB)",
                "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-chest-x-ray-image-data-sets",
                ()),
    RealDataset("openi", "Open-I (Indiana University)", "https://openi.nlm.nih.gov/faq",
                ("xmlpath", "views_from"), has_reports=True),
    RealDataset("siim", "SIIM-ACR Pneumothorax",
                "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation",
                ("csvpath",), needs="pydicom"),
    RealDataset("padchest", "PadChest", "https://bimcv.cipf.es/bimcv-projects/padchest/",
                ("csvpath",), overrides=(("Tube", "support devices"),)),
    RealDataset("chestxdet10", "ChestX-Det10",
                "https://github.com/Deepwise-AILab/ChestX-Det10-Dataset",
                ("annotations", "original_size"), has_boxes=True),
)}


def get(name: str) -> RealDataset:
    """The registry entry of real dataset ``name``; a clear error for an unknown name."""
    if name not in REAL_DATASETS:
        raise KeyError(f"unknown real dataset {name!r}; known: {', '.join(REAL_DATASETS)}")
    return REAL_DATASETS[name]


# ---- the YAML file ---------------------------------------------------------------------------
def read_spec(path: str | os.PathLike) -> dict:
    """Read and validate a real-data YAML file; errors name the file, key and fix."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cfg.data = {str(path)!r} is neither 'embedded' nor an existing "
                          "YAML file describing real datasets (see unichest_lib.data.real)")
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
        if isinstance(opts, dict):  # relative paths are relative to the YAML file's folder
            spec["datasets"][name] = opts = {k: _resolve(p, v) if k in PATH_OPTIONS else v
                                             for k, v in opts.items()}
        _check_options(p, name, opts)
    if isinstance(spec.get("split"), str):
        spec["split"] = _resolve(p, spec["split"])
        if not Path(spec["split"]).is_file():
            raise FileNotFoundError(f"{p}: split {spec['split']!r} is not a file; give a CSV "
                                    "with columns dataset, patient, split, or fractions "
                                    "{valid: f, test: g}")
    return spec


#: Options that name a file or folder; a relative one is relative to the YAML file's folder.
PATH_OPTIONS = ("imgpath", "csvpath", "metacsvpath", "reportpath", "annotations", "xmlpath")


def _resolve(yaml_path: Path, value):
    if not isinstance(value, str) or os.path.isabs(os.path.expanduser(value)):
        return os.path.expanduser(value) if isinstance(value, str) else value
    return str((yaml_path.parent / value).resolve())


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


__all__ = ["CHESTXDET10_LABELS", "CHEX_COLS", "COMMON_OPTIONS", "FRONTAL", "LABELS",
           "PATH_OPTIONS", "REAL_DATASETS", "RealDataset", "get", "read_spec"]
