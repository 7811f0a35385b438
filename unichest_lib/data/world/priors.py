"""Class prevalences of each embedded source, derived from the real label metadata that
``torchxrayvision`` ships (no images): the *label prior* heterogeneity of :mod:`.sources`.

Nothing here is hand-typed except where a dataset's metadata is not shipped; those invented
numbers live in :data:`INVENTED` and the data cards say so. The world renders frontal views, so
prevalences and images per patient count frontal images only (:data:`FRONTAL`). Which dataset
label feeds which class is written down where a dataset's names need it (:mod:`.real_terms`:
:data:`PADCHEST_MAP`, :data:`OPENI_MESH`); VinDr-CXR's reader convention is :data:`VINDR_MIN_READERS`. The
``images_per_patient`` of :data:`.sources.SPECS` are these derived numbers, rounded
(``tests/test_priors_real.py`` checks them). Derived numbers are cached as a small JSON file
under ``cfg.cache_dir`` (written atomically) because reading PadChest's CSV takes a few
seconds.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ...fileio import atomic_write_json
from .. import labels as L
from .real_terms import OPENI_MESH, PADCHEST_MAP

#: Bump when the derivation changes, so cached JSON files are recomputed.
#: 2: frontal views only (CheXpert, PadChest, Open-I), PadChest label map corrected, Open-I
#: derived from its reports, VinDr reader conventions, images per patient.
PRIORS_VERSION = 2

#: Which real metadata file each source's prevalences come from (None = not shipped).
REAL_SOURCE = {
    "chestxray14": "Data_Entry_2017_v2020.csv.gz",
    "chexpert": "chexpert_train.csv.gz",
    "mimic": "chexpert_train.csv.gz",  # MIMIC-CXR metadata is not shipped: borrows CheXpert's
    "vindr": "vinbigdata-train.csv.gz",
    "padchest": "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
    "siim": "siim-pneumothorax-train-rle.csv.gz",
    "openi": "NLMCXR_reports.tgz",
    "shenzhen": None,
    "chestxdet10": None,
}

#: Invented (or literature) numbers for sources whose label metadata is not shipped.
#: Shenzhen: 336 of 662 images show tuberculosis (Jaeger et al. 2014), a real published count.
#: ChestX-Det10: 3,543 NIH images chosen *because* they have boxes -> ChestX-ray14's
#: prevalences doubled, capped at 0.4 (invented).
INVENTED = {
    "shenzhen": {"tuberculosis": 336 / 662},
    "chestxdet10": ("chestxray14", 2.0),
}

#: Prevalence floor so every class appears at least occasionally in every source.
FLOOR = 0.005

#: The views counted as frontal (the world renders frontal images only): the views the real
#: loaders read by default (``unichest_lib.data.real.registry.FRONTAL``; a test checks they
#: agree). PadChest's "AP_horizontal" (supine) images are left out, as the real loader does.
FRONTAL = ("PA", "AP")

#: VinDr-CXR's reader convention: a finding counts when at least this many of the three
#: radiologists marked it (1 = any reader, the union; 2 = a majority).
VINDR_MIN_READERS = 1

def txv_data_dir() -> Path:
    """The folder of label metadata that ``torchxrayvision`` ships (found without importing
    the package, which would pull in torch and scikit-image)."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.origin:
        raise ModuleNotFoundError("torchxrayvision is not installed; the embedded world derives "
                                  "its class prevalences from its metadata: pip install torchxrayvision")
    return Path(spec.origin).parent / "data"


def _canon(name: str):
    try:
        return L.canonical(name)
    except KeyError:
        return None


def _fractions(sets: list[set], n: int) -> dict[str, float]:
    counts: dict[str, int] = {}
    for s in sets:
        for c in s:
            counts[c] = counts.get(c, 0) + 1
    return {c: k / n for c, k in sorted(counts.items())}


def _per_patient(n_images: int, n_patients: int) -> dict:
    return {"n_images": int(n_images), "n_patients": int(n_patients),
            "images_per_patient": n_images / n_patients}


def _chestxray14(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path, usecols=["Finding Labels", "Patient ID", "View Position"])
    d = d[d["View Position"].isin(FRONTAL)]
    sets = [{_canon(x) for x in s.split("|")} - {None} for s in d["Finding Labels"]]
    return {"prevalence": _fractions(sets, len(sets)), "views": list(FRONTAL),
            **_per_patient(len(d), d["Patient ID"].nunique())}


def _chexpert(path: Path) -> dict:
    """Frontal images (``Frontal/Lateral`` = Frontal, ``AP/PA`` in :data:`FRONTAL`); a class
    is positive where its column is 1 and uncertain where it is -1, over all those images."""
    import pandas as pd

    d = pd.read_csv(path)
    d = d[(d["Frontal/Lateral"] == "Frontal") & d["AP/PA"].isin(FRONTAL)]
    cols = [c for c in d.columns if _canon(c) in L.ALL_CLASSES]
    n = len(d)
    prev = {_canon(c): float((d[c] == 1).sum() / n) for c in cols}
    unc = {_canon(c): float((d[c] == -1).sum() / n) for c in cols}
    patients = d["Path"].str.extract(r"(patient\d+)", expand=False)
    return {"prevalence": prev, "uncertain": unc, "views": list(FRONTAL),
            **_per_patient(n, patients.nunique())}


_VINDR_NAMES = {"Nodule/Mass": ("nodule", "mass"), "Other lesion": ("lung lesion",),
                "Pulmonary fibrosis": ("fibrosis",)}


def _vindr(path: Path, min_readers: int = VINDR_MIN_READERS) -> dict:
    """Images of the Kaggle training CSV (three readers each). A finding is positive when at
    least ``min_readers`` distinct radiologists marked it (1 = any reader, the default union;
    2 = a majority); "no finding" is the image's own label (in this CSV all three readers agree
    on it). ``prevalence_by_min_readers`` holds the prevalences of both conventions."""
    import pandas as pd

    if min_readers not in (1, 2, 3):
        raise ValueError(f"min_readers = {min_readers!r}: use 1 (any reader), 2 or 3")
    d = pd.read_csv(path, usecols=["image_id", "class_name", "rad_id"])
    votes: dict[tuple[str, str], set] = {}
    for img, cls, rad in zip(d["image_id"], d["class_name"], d["rad_id"]):
        votes.setdefault((img, cls), set()).add(rad)
    images = sorted(set(d["image_id"]))
    by_k = {}
    for k in sorted({1, 2, min_readers}):
        sets: dict[str, set] = {img: set() for img in images}
        for (img, cls), readers in votes.items():
            if len(readers) >= k or cls == "No finding":
                sets[img].update(_VINDR_NAMES.get(cls) or ((_canon(cls),) if _canon(cls) else ()))
        for found in sets.values():  # "no finding" only where nothing else counts
            if len(found) > 1:
                found.discard("no finding")
        by_k[str(k)] = _fractions(list(sets.values()), len(images))
    # no patient ids are published: each image is its own patient
    return {"prevalence": by_k[str(min_readers)], "min_readers": min_readers,
            "prevalence_by_min_readers": by_k, **_per_patient(len(images), len(images))}


def _padchest(path: Path) -> dict:
    """Frontal images (``Projection`` in :data:`FRONTAL`) with labels; classes from
    :data:`PADCHEST_MAP` (exact label names)."""
    import pandas as pd

    d = pd.read_csv(path, usecols=["PatientID", "Projection", "Labels"]).dropna()
    d = d[d["Projection"].isin(FRONTAL)]
    to_class = {lab: c for c, labs in PADCHEST_MAP.items() for lab in labs}
    sets = []
    for s in d["Labels"]:
        sets.append({to_class[lab] for lab in (x.strip().lower() for x in ast.literal_eval(s))
                     if lab in to_class})
    return {"prevalence": _fractions(sets, len(sets)), "views": list(FRONTAL),
            **_per_patient(len(d), d["PatientID"].nunique())}


def _openi(path: Path) -> dict:
    """Per report (one study of one patient; Open-I publishes no patient ids), over the
    reports that have images: classes from the manual MeSH *major* headings
    (:data:`OPENI_MESH`). The labels describe the whole study (typically one PA and one lateral
    image), so no view filter applies; the world renders one frontal image per report."""
    import tarfile
    import xml.etree.ElementTree as ET

    rules = [(c, key.split("/")) for c, keys in OPENI_MESH.items() for key in keys]
    sets, n_all = [], 0
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            if not m.name.endswith(".xml"):
                continue
            root = ET.parse(tar.extractfile(m)).getroot()
            n = len(root.findall(".//parentImage"))
            if not n:
                continue
            n_all += n
            found = set()
            for node in root.findall(".//MeSH/major"):
                parts = [p.strip().lower() for p in (node.text or "").split("/")]
                for c, (head, *need) in rules:
                    if parts[0] == head and all(w in parts[1:] for w in need):
                        found.add(c)
            sets.append(found)
    return {"prevalence": _fractions(sets, len(sets)), "per": "report", "terms": "MeSH major",
            "n_images_all_views": n_all, **_per_patient(len(sets), len(sets))}


def _siim(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path)
    d.columns = [c.strip() for c in d.columns]
    pos = d.groupby("ImageId")["EncodedPixels"].apply(lambda s: (s.astype(str).str.strip() != "-1").any())
    # no patient ids in the challenge CSV: each image is its own patient
    return {"prevalence": {"pneumothorax": float(pos.mean())}, **_per_patient(len(pos), len(pos))}


_READERS = {"chestxray14": _chestxray14, "chexpert": _chexpert, "vindr": _vindr,
            "padchest": _padchest, "siim": _siim, "openi": _openi}


def derive_real(data_dir: Path | None = None, min_readers: int = VINDR_MIN_READERS) -> dict:
    """Per-dataset statistics computed from the shipped metadata (several seconds): frontal
    images only (Open-I: per report), ``prevalence`` per class, ``n_images``, ``n_patients`` and
    ``images_per_patient``. ``min_readers`` is VinDr-CXR's reader convention (1 = any of the
    three readers, the default; 2 = at least two agree)."""
    data_dir = Path(data_dir or txv_data_dir())
    out = {}
    for name, reader in _READERS.items():
        path = data_dir / REAL_SOURCE[name]
        if not path.exists():
            raise FileNotFoundError(
                f"torchxrayvision metadata file {path} is missing; reinstall torchxrayvision "
                "(pip install --force-reinstall torchxrayvision) or remove the world cache")
        stats = reader(path, min_readers) if name == "vindr" else reader(path)
        out[name] = {"file": path.name, **stats}
    return out


_MEMO: dict[str, dict] = {}


def real_statistics(cache_dir: str | os.PathLike | None = None) -> dict:
    """:func:`derive_real`, cached as JSON in ``cache_dir`` (recomputed if unreadable) and
    in memory for the rest of the process."""
    if "stats" in _MEMO:
        return _MEMO["stats"]
    if cache_dir is None:
        _MEMO["stats"] = derive_real()
        return _MEMO["stats"]
    key = hashlib.sha256(f"{PRIORS_VERSION}|{txv_data_dir()}".encode()).hexdigest()[:12]
    path = Path(cache_dir) / "world" / f"real_priors_{key}.json"
    if path.exists():
        try:
            stats = json.loads(path.read_text())
            if set(stats) == set(_READERS):
                _MEMO["stats"] = stats
                return stats
        except (json.JSONDecodeError, OSError):
            pass
    stats = derive_real()
    atomic_write_json(path, stats)
    _MEMO["stats"] = stats
    return stats


def source_priors(stats: dict, min_readers: int | None = None) -> dict[str, dict[str, float]]:
    """Each embedded source's prevalence of every class in :data:`labels.ALL_CLASSES`
    *at full heterogeneity*: real numbers where shipped, pooled numbers otherwise.
    ``min_readers`` picks VinDr-CXR's reader convention (default: the one ``stats`` was
    derived with, :data:`VINDR_MIN_READERS`).

    ``"no finding"`` is not drawn (it is implied by the absence of every other finding),
    so it is left out.
    """
    real = {s: dict(stats[f]["prevalence"]) if (f := _stat_name(s)) else {} for s in REAL_SOURCE}
    if min_readers is not None:
        real["vindr"] = dict(stats["vindr"]["prevalence_by_min_readers"][str(min_readers)])
    for s, rule in INVENTED.items():
        if isinstance(rule, dict):
            real[s].update(rule)
        else:
            base, factor = rule
            real[s].update({c: min(0.4, p * factor) for c, p in real[base].items()})
    pooled = pooled_prior(real)
    return {s: {c: max(FLOOR, real[s].get(c, pooled[c])) for c in findings()} for s in REAL_SOURCE}


def pooled_prior(real: dict[str, dict[str, float]]) -> dict[str, float]:
    """The shared prior every source uses at heterogeneity 0: for each class, the mean
    prevalence over the pre-training sources that label it, else over downstream
    population sources (PadChest) that do, else :data:`FLOOR`."""
    out = {}
    for c in findings():
        vals = [real[s][c] for s in ("mimic", "chestxray14", "chexpert", "vindr") if c in real[s]]
        if not vals and c in real["padchest"]:
            vals = [real["padchest"][c]]
        out[c] = max(FLOOR, float(np.mean(vals))) if vals else FLOOR
    return out


def _stat_name(source: str):
    f = REAL_SOURCE[source]
    return {v: k for k, v in REAL_SOURCE.items() if v and k != "mimic"}.get(f) if f else None


def findings() -> tuple[str, ...]:
    """Every class that is drawn and rendered (all classes but ``"no finding"``)."""
    return tuple(c for c in L.ALL_CLASSES if c != "no finding")
