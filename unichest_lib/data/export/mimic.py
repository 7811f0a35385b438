"""MIMIC-CXR-JPG 2.0.0 (Johnson et al. 2019) as PhysioNet ships it, with the report files of
MIMIC-CXR: JPEGs under ``files/p<XX>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` (``XX`` = the
subject id's first two digits), ``mimic-cxr-2.0.0-chexpert.csv.gz`` (subject_id, study_id and
the 14 CheXpert-labeller columns, one row per study), ``mimic-cxr-2.0.0-metadata.csv.gz`` (one
row per image: dicom_id, subject_id, study_id, PerformedProcedureStepDescription,
ViewPosition, Rows, Columns, StudyDate, StudyTime and the three DICOM code meanings; the
parser needs ViewPosition and torchxrayvision StudyDate), ``mimic-cxr-2.0.0-split.csv.gz``
(dicom_id, study_id, subject_id, split with ``validate`` for the validation split; no loader
reads it: the export's ``splits.csv`` carries the split) and one report per study,
``files/p<XX>/p<subject_id>/s<study_id>.txt``, holding the embedded report verbatim.

Ids look like the real ones: subject ids are 8-digit numbers 10000000..19999999 (a bijection
of the world's patient number, spread over the ``p10``..``p19`` folders), study ids 5xxxxxxx
(one study per image), DICOM ids five dash-joined groups of 8 hex digits (a hash of the world
seed and row). Labels are written as the labeller writes them (see :mod:`.chexpert`): 1.0,
-1.0 for the embedded NaN (MIMIC's world has uncertain labels too), 0.0 where the report
explicitly negates the finding ("No pneumothorax.", "Heart size is normal."), blank where it
does not mention it; "No Finding" 1.0 or blank.

Placeholders: ViewPosition (AP for three studies in five, as MIMIC is mostly portable AP),
StudyDate / StudyTime (MIMIC-style shifted dates, 21xx, in follow-up order per patient) and
the DICOM code meanings; every image is frontal and alone in its study.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .chexpert import chexpert_columns
from .core import Exported, SourceRows, follow_up, jpeg, write_csv

#: How the format keeps the pixels (tests/test_export.py): MIMIC-CXR-JPG ships JPEG.
PIXELS = "lossy"
LABELS_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
META_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
#: Report sentences the CheXpert labeller reads as a negation of a class (besides "No X.").
NORMAL_SENTENCES = {"cardiomegaly": ("heart size is normal", "normal heart size"),
                    "enlarged cardiomediastinum": ("cardiomediastinal silhouette is within "
                                                   "normal limits",)}


def subject_ids(patient_index: np.ndarray) -> np.ndarray:
    """8-digit MIMIC-style subject ids 10000000..19999999 (one per world patient)."""
    return 10_000_000 + (np.asarray(patient_index, np.int64) * 1_000_003) % 10_000_000


def study_ids(rows: np.ndarray) -> np.ndarray:
    """8-digit MIMIC-style study ids 50000000..59999999 (one per image)."""
    return 50_000_000 + (np.asarray(rows, np.int64) * 104_729 + 4_127) % 10_000_000


def dicom_id(seed: int, row: int) -> str:
    h = hashlib.sha1(f"mimic:{seed}:{row}".encode()).hexdigest()
    return "-".join(h[k:k + 8] for k in range(0, 40, 8))


def _explicit_negatives(src: SourceRows) -> np.ndarray:
    """(n, classes) True where image i's report negates the class (a 0.0 of the labeller)."""
    out = np.zeros((src.n, len(src.classes)), bool)
    col = {c: j for j, c in enumerate(src.classes)}
    for i in range(src.n):
        text, triplets = src.world.report(src.source, i)
        for t in triplets:
            if not t.exists and t.position != "uncertain" and t.entity in col:
                out[i, col[t.entity]] = True
        low = text.lower()
        for c, phrases in NORMAL_SENTENCES.items():
            if c in col and any(p in low for p in phrases):
                out[i, col[c]] = True
    return out


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    rows = np.arange(src.n)
    subj, study, fu = subject_ids(src.patient_index), study_ids(rows), follow_up(src.patient_index)
    seed = int(src.world.cfg.world_seed)
    dicom = [dicom_id(seed, i) for i in rows]
    folder = [f"files/p{str(s)[:2]}/p{s}" for s in subj]
    files = [f"{d}/s{t}/{i}.jpg" for d, t, i in zip(folder, study, dicom)]
    for f, im in zip(files, src.images()):
        jpeg(root / f, im)
    for i, (d, t) in enumerate(zip(folder, study)):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / f"s{t}.txt").write_text(src.report(i), encoding="utf-8")
    labels = pd.concat([pd.DataFrame({"subject_id": subj, "study_id": study}),
                        chexpert_columns(src, _explicit_negatives(src))], axis=1)
    ap = rows % 5 < 3
    date = ((2110 + src.patient_index % 90 + fu // 12) * 10_000 + (1 + fu % 12) * 100
            + 1 + src.patient_index % 28)
    meta = pd.DataFrame({
        "dicom_id": dicom, "subject_id": subj, "study_id": study,
        "PerformedProcedureStepDescription": np.where(ap, "CHEST (PORTABLE AP)",
                                                      "CHEST (PA AND LAT)"),
        "ViewPosition": np.where(ap, "AP", "PA"), "Rows": src.image_size,
        "Columns": src.image_size, "StudyDate": date,
        "StudyTime": np.round(80_000 + (rows * 3_701) % 100_000 + (rows % 1000) / 1000, 3),
        "ProcedureCodeSequence_CodeMeaning": np.where(ap, "CHEST (PORTABLE AP)",
                                                      "CHEST (PA AND LAT)"),
        "ViewCodeSequence_CodeMeaning": np.where(ap, "antero-posterior", "postero-anterior"),
        "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
    split = pd.DataFrame({"dicom_id": dicom, "study_id": study, "subject_id": subj,
                          "split": pd.Series(src.split).replace({"valid": "validate"})})
    order = np.lexsort((study, subj))  # the release sorts by subject, then study
    write_csv(root / LABELS_CSV, labels.iloc[order])
    write_csv(root / META_CSV, meta.iloc[order])
    write_csv(root / SPLIT_CSV, split.iloc[order])
    manifest = pd.DataFrame({"world_row": rows, "file": [f"{src.source}/{f}" for f in files],
                             "patient": subj.astype(str)})
    return Exported({"imgpath": f"{src.source}/files", "csvpath": f"{src.source}/{LABELS_CSV}",
                     "metacsvpath": f"{src.source}/{META_CSV}", "reportpath": src.source},
                    manifest)
