"""PadChest (Bustos et al. 2020) as BIMCV ships it: 16-bit greyscale PNGs named
``<StudyID>_<6 characters>.png`` (here in one folder, torchxrayvision's ``flat_dir`` layout;
the release spreads them over numbered folders, its ``ImageDir`` column) and
``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` with the release's 36 columns
(ImageID, ImageDir, StudyDate_DICOM, StudyID, PatientID, PatientBirth, PatientSex_DICOM,
ViewPosition_DICOM, Projection, ..., Report, MethodLabel, Labels, Localizations, ...).

Reproduced conventions: ``Labels`` is a Python-list string of PadChest's own lower-case
terms (``"['laminar atelectasis', 'pleural effusion']"``, ``"['normal']"`` when nothing is
found). Each embedded class is written as one of its real PadChest terms (:data:`TERMS`,
chosen by row in turn, e.g. atelectasis as "laminar atelectasis", "atelectasis" or "lobar
atelectasis", fracture as "callus rib fracture", "rib fracture", ...), which torchxrayvision
matches by substring onto its pathologies ("pleural effusion" -> Effusion, "hemidiaphragm
elevation" -> Hemidiaphragm Elevation) and the loaders harmonise back onto the class. Pixels
are the uint8 image times 257 (0..65535), which the reader min-max scales. Patient and study
ids are long decimal numbers like the release's (a hash of the world seed and the patient
or row); PatientBirth keeps every patient older than torchxrayvision's 10-year cut-off.

Real PadChest observes more classes than the embedded padchest label space (consolidation,
edema, infiltration, mass, ...): the export writes terms for the embedded classes only, so
those other classes read back as 0, where the embedded side has them missing; only the
classes both sides share are compared. Placeholders: dates, birth years, sex, the DICOM
columns and the (empty) Report; every image is PA.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .core import Exported, SourceRows, png16, write_csv

#: How the format keeps the pixels (tests/test_export.py): 16-bit PNG, min-max scaled on read.
PIXELS = "minmax"
CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
#: PadChest's own terms for each embedded class (all occur in the release); row i with the
#: class positive gets the (i mod len)-th.
TERMS: dict[str, tuple[str, ...]] = {
    "pneumonia": ("pneumonia", "atypical pneumonia"),
    "pleural effusion": ("pleural effusion", "loculated pleural effusion"),
    "cardiomegaly": ("cardiomegaly",),
    "atelectasis": ("laminar atelectasis", "atelectasis", "lobar atelectasis"),
    "nodule": ("nodule", "multiple nodules"),
    "emphysema": ("emphysema",),
    "fracture": ("callus rib fracture", "rib fracture", "vertebral fracture",
                 "clavicle fracture"),
    "tuberculosis": ("tuberculosis sequelae", "tuberculosis"),
    "scoliosis": ("scoliosis",),
    "elevated hemidiaphragm": ("hemidiaphragm elevation",),
}
COLUMNS = ["", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
           "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "MethodProjection",
           "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
           "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM",
           "PixelAspectRatio_DICOM", "SpatialResolution_DICOM", "BitsStored_DICOM",
           "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM", "Columns_DICOM",
           "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
           "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels",
           "Localizations", "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS"]


def _digits(key: str, n: int) -> str:
    """A decimal number of ``n`` digits (no leading zero) from a hash of ``key``."""
    v = int(hashlib.sha1(key.encode()).hexdigest(), 16)
    return str(10 ** (n - 1) + v % (9 * 10 ** (n - 1)))


def _suffix(key: str) -> str:
    h = int(hashlib.sha1(key.encode()).hexdigest(), 16)
    abc = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(abc[(h >> (6 * k)) % 36] for k in range(6))


def terms(src: SourceRows) -> list[list[str]]:
    """The PadChest terms of every row ("normal" when no embedded class is positive)."""
    missing = [c for c in src.classes if c not in TERMS]
    if missing:
        raise ValueError(f"padchest export: no PadChest term for class(es) {missing}")
    out = []
    for i, y in enumerate(src.labels):
        t = [TERMS[c][i % len(TERMS[c])] for c, v in zip(src.classes, y) if v == 1]
        out.append(t or ["normal"])
    return out


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    seed = int(src.world.cfg.world_seed)
    pi, rows = src.patient_index, np.arange(src.n)
    patient = [_digits(f"padchest-patient:{seed}:{p}", 38) for p in pi]
    study = [_digits(f"padchest-study:{seed}:{i}", 38) for i in rows]
    image = [f"{s}_{_suffix(f'padchest-image:{seed}:{i}')}.png" for s, i in zip(study, rows)]
    for f, im in zip(image, src.images()):
        png16(root / "images" / f, im.astype(np.uint16) * 257)
    lab = terms(src)
    s = src.image_size
    csv = pd.DataFrame({
        "": rows, "ImageID": image, "ImageDir": 0,
        "StudyDate_DICOM": (2009 + (pi + rows) % 9) * 10_000 + (1 + rows % 12) * 100
        + 1 + rows % 28,
        "StudyID": study, "PatientID": patient, "PatientBirth": (1925.0 + pi % 75),
        "PatientSex_DICOM": np.where(pi % 2 == 0, "M", "F"),
        "ViewPosition_DICOM": "POSTEROANTERIOR", "Projection": "PA",
        "MethodProjection": "Manual review of DICOM fields", "Pediatric": "No",
        "Modality_DICOM": "CR", "Manufacturer_DICOM": "ImagingDynamicsCompanyLtd",
        "PhotometricInterpretation_DICOM": "MONOCHROME2", "PixelRepresentation_DICOM": 0,
        "PixelAspectRatio_DICOM": np.nan, "SpatialResolution_DICOM": 0.143,
        "BitsStored_DICOM": 16, "WindowCenter_DICOM": 32768.0, "WindowWidth_DICOM": 65535.0,
        "Rows_DICOM": s, "Columns_DICOM": s, "XRayTubeCurrent_DICOM": np.nan,
        "Exposure_DICOM": np.nan, "ExposureInuAs_DICOM": np.nan, "ExposureTime": np.nan,
        "RelativeXRayExposure_DICOM": np.nan, "ReportID": 4_000_000 + rows, "Report": "",
        "MethodLabel": "Physician", "Labels": [str(t) for t in lab], "Localizations": "[]",
        "LabelsLocalizationsBySentence": [str([t]) for t in lab], "labelCUIS": "[]",
        "LocalizationsCUIS": "[]"})[COLUMNS]
    write_csv(root / CSV, csv)
    manifest = pd.DataFrame({"world_row": rows, "file": [f"{src.source}/images/{f}" for f in image],
                             "patient": patient})
    return Exported({"imgpath": f"{src.source}/images", "csvpath": f"{src.source}/{CSV}"},
                    manifest)
