"""CheXpert (Irvin et al. 2019) as Stanford ships its downsampled release: the folder
``CheXpert-v1.0-small/`` with ``train.csv`` (columns Path, Sex, Age, Frontal/Lateral, AP/PA,
then the 14 CheXpert-labeller columns) and the tree
``train/patient<NNNNN>/study<M>/view1_frontal.jpg`` of 8-bit JPEGs.

Reproduced conventions: label cells are ``1.0`` (positive), ``-1.0`` (uncertain; the embedded
NaN), ``0.0`` (negated in the report) or blank (not mentioned), as the CheXpert labeller writes
them; "No Finding" is ``1.0`` or blank, never ``0.0``. A negative is written blank unless it is
one of the findings reports usually negate (pneumothorax, effusion, consolidation, edema,
pneumonia, cardiomegaly), for which a fixed pseudo-random third of negatives (seeded by the
world seed) is an explicit ``0.0``; both read back as 0 under the parser's default
``blank: negative``. Patients are numbered from ``patient00001`` (world patient 0), one
study per image in row order (``study1``, ``study2``, ...); torchxrayvision reads the patient
id ``"00001"`` from the ``train/`` part of the Path, so the CSV must be named ``train.csv``.

Placeholders: every image goes into ``train.csv`` under ``train/`` whatever its embedded
split (the split travels in the export's ``splits.csv``); Sex, Age and AP/PA are made up from
the patient number (the embedded world has none); every image is a frontal ``view1``.
:func:`chexpert_columns` (the labeller columns) is shared with :mod:`.mimic`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..real.registry import CHEX_COLS
from .core import Exported, SourceRows, follow_up, jpeg, own_label_names, write_csv

#: How the format keeps the pixels (tests/test_export.py): CheXpert ships JPEG.
PIXELS = "lossy"
#: The release folder; ``imgpath`` points at it (torchxrayvision strips it from each Path).
RELEASE = "CheXpert-v1.0-small"
#: Findings a report commonly negates ("no pneumothorax"): the labeller writes 0.0 for them.
COMMONLY_NEGATED = ("pneumothorax", "pleural effusion", "consolidation", "edema", "pneumonia",
                    "cardiomegaly")
#: Share of those negatives written as an explicit 0.0 (the rest blank).
EXPLICIT_ZERO = 1 / 3


def chexpert_columns(src: SourceRows, explicit_zero: np.ndarray) -> pd.DataFrame:
    """The 14 CheXpert-labeller columns (in the release's order) of every row of ``src``:
    1.0 / -1.0 (embedded NaN = uncertain) / 0.0 where ``explicit_zero`` (n, classes) is set
    on a negative / blank; "No Finding" is 1.0 or blank."""
    names = own_label_names(src.source)
    y = src.labels
    cols = {}
    for col in CHEX_COLS:
        cls = [c for c in src.classes if names.get(c) == col]
        v = np.full(src.n, np.nan)
        if cls:
            j = src.classes.index(cls[0])
            v = np.where(y[:, j] == 1, 1.0, np.where(np.isnan(y[:, j]), -1.0, v))
            if col == "No Finding":
                v[y[:, j] == 0] = np.nan  # the labeller never writes No Finding = 0
            else:
                v[(y[:, j] == 0) & explicit_zero[:, j]] = 0.0
        cols[col] = v
    return pd.DataFrame(cols)


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source / RELEASE
    pid, study = src.patient_index + 1, follow_up(src.patient_index) + 1
    rel = [f"train/patient{p:05d}/study{k}/view1_frontal.jpg" for p, k in zip(pid, study)]
    for f, im in zip(rel, src.images()):
        jpeg(root / f, im)
    rng = np.random.default_rng([int(src.world.cfg.world_seed), 0xC4E7])
    common = np.array([c in COMMONLY_NEGATED for c in src.classes])
    explicit = (rng.random((src.n, len(src.classes))) < EXPLICIT_ZERO) & common
    meta = pd.DataFrame({"Path": [f"{RELEASE}/{f}" for f in rel],
                         "Sex": np.where(pid % 2 == 0, "Male", "Female"),
                         "Age": 30 + (pid * 7) % 60, "Frontal/Lateral": "Frontal",
                         "AP/PA": np.where(pid % 3 == 0, "PA", "AP")})
    write_csv(root / "train.csv", pd.concat([meta, chexpert_columns(src, explicit)], axis=1))
    manifest = pd.DataFrame({"world_row": np.arange(src.n),
                             "file": [f"{src.source}/{RELEASE}/{f}" for f in rel],
                             "patient": [f"{p:05d}" for p in pid]})
    return Exported({"imgpath": f"{src.source}/{RELEASE}",
                     "csvpath": f"{src.source}/{RELEASE}/train.csv"}, manifest)
