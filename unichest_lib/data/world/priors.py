"""Class prevalences of each embedded source, derived from the real label metadata that
``torchxrayvision`` ships (no images): the *label prior* heterogeneity of :mod:`.sources`.

Nothing here is hand-typed except where a dataset's metadata is not shipped; those invented
numbers live in :data:`INVENTED` and the data cards say so. Derived numbers are cached as a
small JSON file under ``cfg.cache_dir`` (written atomically) because reading PadChest's CSV
takes a few seconds.

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

#: Bump when the derivation changes, so cached JSON files are recomputed.
PRIORS_VERSION = 1

#: Which real metadata file each source's prevalences come from (None = not shipped).
REAL_SOURCE = {
    "chestxray14": "Data_Entry_2017_v2020.csv.gz",
    "chexpert": "chexpert_train.csv.gz",
    "mimic": "chexpert_train.csv.gz",  # MIMIC-CXR metadata is not shipped: borrows CheXpert's
    "vindr": "vinbigdata-train.csv.gz",
    "padchest": "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
    "siim": "siim-pneumothorax-train-rle.csv.gz",
    "openi": None,
    "shenzhen": None,
    "chestxdet10": None,
}

#: Invented (or literature) numbers for sources whose label metadata is not shipped.
#: Shenzhen: 336 of 662 images show tuberculosis (Jaeger et al. 2014), a real published count.
#: Open-I: mostly normal outpatient studies -> ChestX-ray14's prevalences halved (invented).
#: ChestX-Det10: 3,543 NIH images chosen *because* they have boxes -> ChestX-ray14's
#: prevalences doubled, capped at 0.4 (invented).
INVENTED = {
    "shenzhen": {"tuberculosis": 336 / 662},
    "openi": ("chestxray14", 0.5),
    "chestxdet10": ("chestxray14", 2.0),
}

#: Prevalence floor so every class appears at least occasionally in every source.
FLOOR = 0.005


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


def _chestxray14(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path, usecols=["Finding Labels"])
    sets = [{_canon(x) for x in s.split("|")} - {None} for s in d["Finding Labels"]]
    return {"prevalence": _fractions(sets, len(sets)), "n_images": len(sets)}


def _chexpert(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path)
    cols = [c for c in d.columns if _canon(c) in L.ALL_CLASSES]
    n = len(d)
    prev = {_canon(c): float((d[c] == 1).sum() / n) for c in cols}
    unc = {_canon(c): float((d[c] == -1).sum() / n) for c in cols}
    return {"prevalence": prev, "uncertain": unc, "n_images": n}


def _vindr(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path, usecols=["image_id", "class_name"])
    names = {"Nodule/Mass": ("nodule", "mass"), "Other lesion": ("lung lesion",),
             "Pulmonary fibrosis": ("fibrosis",)}
    sets: dict[str, set] = {}
    for img, cls in zip(d["image_id"], d["class_name"]):
        mapped = names.get(cls) or ((_canon(cls),) if _canon(cls) else ())
        sets.setdefault(img, set()).update(mapped)
    # an image is "no finding" only when no radiologist marked anything
    for s in sets.values():
        if len(s) > 1:
            s.discard("no finding")
    return {"prevalence": _fractions(list(sets.values()), len(sets)), "n_images": len(sets)}


def _padchest(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path, usecols=["Labels"]).dropna()
    extra = {"normal": "no finding", "hemidiaphragm elevation": "elevated hemidiaphragm",
             "tuberculosis sequelae": "tuberculosis", "laminar atelectasis": "atelectasis",
             "lobar atelectasis": "atelectasis", "callus rib fracture": "fracture",
             "vertebral fracture": "fracture", "clavicle fracture": "fracture",
             "humeral fracture": "fracture", "multiple nodules": "nodule",
             "loculated pleural effusion": "pleural effusion"}
    sets = []
    for s in d["Labels"]:
        found = set()
        for lab in ast.literal_eval(s):
            lab = lab.strip()
            c = extra.get(lab) or (_canon(lab) if lab else None)
            if c:
                found.add(c)
        sets.append(found)
    return {"prevalence": _fractions(sets, len(sets)), "n_images": len(sets)}


def _siim(path: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(path)
    d.columns = [c.strip() for c in d.columns]
    pos = d.groupby("ImageId")["EncodedPixels"].apply(lambda s: (s.astype(str).str.strip() != "-1").any())
    return {"prevalence": {"pneumothorax": float(pos.mean())}, "n_images": int(len(pos))}


_READERS = {"chestxray14": _chestxray14, "chexpert": _chexpert, "vindr": _vindr,
            "padchest": _padchest, "siim": _siim}


def derive_real(data_dir: Path | None = None) -> dict:
    """Per-dataset statistics computed from the shipped metadata (a few seconds)."""
    data_dir = Path(data_dir or txv_data_dir())
    out = {}
    for name, reader in _READERS.items():
        path = data_dir / REAL_SOURCE[name]
        if not path.exists():
            raise FileNotFoundError(
                f"torchxrayvision metadata file {path} is missing; reinstall torchxrayvision "
                "(pip install --force-reinstall torchxrayvision) or remove the world cache")
        out[name] = {"file": path.name, **reader(path)}
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


def source_priors(stats: dict) -> dict[str, dict[str, float]]:
    """Each embedded source's prevalence of every class in :data:`labels.ALL_CLASSES`
    *at full heterogeneity*: real numbers where shipped, pooled numbers otherwise.

    ``"no finding"`` is not drawn (it is implied by the absence of every other finding),
    so it is left out.
    """
    real = {s: dict(stats[f]["prevalence"]) if (f := _stat_name(s)) else {} for s in REAL_SOURCE}
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
