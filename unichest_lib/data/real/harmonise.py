"""Label harmonisation of the real datasets: each dataset's own labels onto the canonical
classes of :mod:`unichest_lib.data.labels`, and the patient-level train/valid/test split.

A dataset label maps to the class :func:`~unichest_lib.data.labels.canonical` finds for it;
the few labels it cannot map or maps ambiguously are set in the registry's ``overrides``
(:func:`label_mapping` shows every label and where it went; labels with no class in the union
are dropped and listed). Several labels feeding one class are OR-ed (:func:`harmonise`).

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from typing import Sequence

import os

import numpy as np
import pandas as pd

from ...config import ConfigError
from ..labels import canonical, in_union_order
from .registry import LABELS, REAL_DATASETS, get

#: Patient-level split fractions of a real dataset; the rest is train.
SPLIT_FRACTIONS = {"valid": 0.1, "test": 0.2}


def label_mapping(name: str) -> dict[str, tuple[str, ...]]:
    """Every label of dataset ``name`` -> the canonical classes it feeds (empty = dropped).

    Built from the dataset's own label names with :func:`labels.canonical`; the few labels it
    cannot map or maps ambiguously are set in the registry's ``overrides`` (e.g. VinDr-CXR's
    "Nodule/Mass" feeds both nodule and mass, see :func:`harmonise`).
    """
    spec = get(name)
    over = dict(spec.overrides)
    out = {}
    for lab in LABELS[name]:
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


def observed_classes(name: str) -> tuple[str, ...]:
    """The canonical classes real dataset ``name`` observes, in union order (ask
    :func:`unichest_lib.data.label_spaces.source_classes` with ``cfg.data`` for either world)."""
    return in_union_order(c for cs in label_mapping(name).values() for c in cs)


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
    image of a patient lands in the same split and the split never changes between runs.
    ``fractions`` may instead be the path of a split file (:func:`split_from_file`)."""
    if isinstance(fractions, str):
        return split_from_file(fractions, source, patients)
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


def split_from_file(path: str, source: str, patients: Sequence[str]) -> np.ndarray:
    """The split of each row read from a CSV with columns ``dataset, patient, split`` (an
    official split, or the one the embedded world's exporter writes). Every patient of
    ``source`` must be listed, once."""
    t = _split_file(str(path))
    t = t[t["dataset"] == source]
    if t["patient"].duplicated().any():
        dup = t.loc[t["patient"].duplicated(), "patient"].iloc[0]
        raise ValueError(f"split file {path}: patient {dup!r} of {source!r} is listed twice")
    lookup = dict(zip(t["patient"], t["split"]))
    out = np.array([lookup.get(str(p), "") for p in patients], dtype=object)
    if (out == "").any():
        miss = [str(p) for p, o in zip(patients, out) if o == ""]
        raise ValueError(f"split file {path}: {len(set(miss))} patient(s) of {source!r} are not "
                         f"listed, e.g. {miss[0]!r}; list every patient (dataset, patient, "
                         "split) or use split fractions instead")
    return out.astype(str)


_SPLIT_FILES: dict[tuple, pd.DataFrame] = {}


def _split_file(path: str) -> pd.DataFrame:
    try:
        st = os.stat(path)
    except OSError as e:
        raise FileNotFoundError(f"split file {path} cannot be read: {e}") from None
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _SPLIT_FILES:
        try:
            t = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as e:
            raise ValueError(f"cannot read split file {path}: {e}") from None
        miss = {"dataset", "patient", "split"} - set(t.columns)
        if miss:
            raise ValueError(f"split file {path} lacks column(s) {sorted(miss)}; expected "
                             "dataset, patient, split")
        bad = sorted(set(t["split"]) - {"train", "valid", "test"})
        if bad:
            raise ValueError(f"split file {path}: split values {bad[:3]} are not train, valid "
                             "or test")
        _SPLIT_FILES.clear()
        _SPLIT_FILES[key] = t
    return _SPLIT_FILES[key]


__all__ = ["SPLIT_FRACTIONS", "check_label_values", "harmonise", "label_mapping",
           "label_mapping_table", "observed_classes", "patient_split", "split_from_file"]
