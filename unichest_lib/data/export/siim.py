"""SIIM-ACR Pneumothorax (2019 Kaggle challenge) as its training download lays it out: one
DICOM per image, ``dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm``
(the ImageId is the SOP instance UID, ``1.2.276.0.7230010.3.1.4.8323329.<n>.1517875162.<m>``,
with matching ``...3.1.2...`` study and ``...3.1.3...`` series UIDs), and ``train-rle.csv``
with the columns ``ImageId`` and ``" EncodedPixels"`` (the leading space is the real file's).

Conventions reproduced: ``-1`` for an image without pneumothorax, otherwise the challenge's
run-length encoding of the mask: pixels numbered column by column (x outer, y inner), pairs of
(start relative to the end of the previous run, length), which torchxrayvision's ``rle2mask``
decodes. The mask is the world's pneumothorax mask (its box, or failing that the middle
quarter, when the world drew none); the label decides, so a drawn pneumothorax the labeller
missed goes out as ``-1``. 8-bit MONOCHROME2 pixels; DICOM tags as the challenge's files carry
them (CR, Secondary Capture, PatientID a UUID, ViewPosition, PixelSpacing); no patient id in
the CSV, so the real loader counts each image as a patient.

Placeholders: the RLE is on the written image's grid (the world's size; the release's images
are 1024 px, a size torchxrayvision's mask decoder assumes, which only its
``pathology_masks=True`` uses); the release's files are JPEG-baseline compressed, these are
uncompressed (lossless, no encoder needed); patient UUID, age and sex are derived from the row.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from .core import Exported, SourceRows, dicom, write_csv

#: How the format keeps the pixels (tests/test_export.py): DICOM, min-max scaled on reading.
PIXELS = "minmax"
#: Secondary Capture Image Storage (the challenge's images were converted from PNG).
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
_UID = "1.2.276.0.7230010.3.1.{kind}.8323329.{n}.1517875162.{m}"


def rle_encode(mask: np.ndarray) -> str:
    """SIIM's run-length code of a bool (H, W) mask; "-1" when empty."""
    flat = np.asarray(mask, bool).T.ravel()  # column-major: x outer, y inner
    d = np.diff(np.concatenate([[0], flat.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if not len(starts):
        return "-1"
    rel = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{a} {b}" for a, b in zip(rel, ends - starts))


def _mask(src: SourceRows, i: int) -> np.ndarray:
    s = src.image_size
    m = src.world.finding_masks(src.source, i).get("pneumothorax")
    if m is not None and m.any():
        return m
    m = np.zeros((s, s), bool)
    x0, y0, x1, y1 = (int(round(v)) for v in src.boxes(i).get(
        "pneumothorax", (s / 4, s / 4, 3 * s / 4, 3 * s / 4)))
    m[y0:y1, x0:x1] = True
    return m


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    seed = src.world.cfg.world_seed
    j = src.classes.index("pneumothorax")
    images = src.images()
    ids, files, codes = [], [], []
    for i, im in enumerate(images):
        h = int(hashlib.md5(f"siim:{seed}:{i}".encode()).hexdigest(), 16)
        n, ms = 1000 + i, [100000 + (h >> (20 * k)) % 900000 for k in range(3)]
        study, series, iid = (_UID.format(kind=k, n=n, m=m) for k, m in zip((2, 3, 4), ms))
        f = f"dicom-images-train/{study}/{series}/{iid}.dcm"
        pid = str(uuid.UUID(int=h))
        dicom(root / f, im, bits_stored=8, sop_class=SOP_CLASS, uids=(study, series, iid),
              Modality="CR", PatientID=pid, PatientName=pid, PatientAge=f"{20 + h % 60:03d}Y",
              PatientSex="MF"[h % 2], BodyPartExamined="CHEST", ViewPosition="PA",
              PixelSpacing=[0.168, 0.168])
        ids.append(iid)
        files.append(f"{src.source}/{f}")
        codes.append(rle_encode(_mask(src, i)) if src.labels[i, j] == 1 else "-1")
    write_csv(root / "train-rle.csv", pd.DataFrame({"ImageId": ids, " EncodedPixels": codes}))
    manifest = pd.DataFrame({"world_row": np.arange(src.n), "file": files, "patient": ids})
    return Exported({"imgpath": f"{src.source}/dicom-images-train",
                     "csvpath": f"{src.source}/train-rle.csv"}, manifest)
