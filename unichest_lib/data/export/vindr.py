"""VinDr-CXR (Nguyen et al. 2022) as PhysioNet ships it: one DICOM per image,
``train/<image_id>.dicom`` (``image_id`` 32 hex characters, here the MD5 of the world seed and
row), and ``annotations/annotations_train.csv`` with one row per reader and finding:
``image_id, rad_id, class_name, x_min, y_min, x_max, y_max``.

Conventions reproduced: three readers per image, drawn from R1..R17; every embedded positive is
marked by one, two or three of them (torchxrayvision's ``VinDr_Dataset`` takes the union of
the readers), each with its own box (the embedded box, shifted by up to a pixel for the 2nd
and 3rd reader); a reader who marks nothing writes a "No finding" row with blank coordinates,
so an image without positives gets "No finding" from all three. VinDr's own class names
("Pleural effusion", "Pleural thickening", "Pulmonary fibrosis", ...); embedded nodule and mass
both go out as the single "Nodule/Mass", which the real harmonisation turns into missing for
both (a many-to-one label the release cannot undo). Pixels are 12-bit (``uint8 * 16``) in
uint16 words; one image in five (by its id) is MONOCHROME1, stored inverted as in many of the
release's files, for the reader to re-invert.

Placeholders: the images are the world's size (the release's are ~2-3k px, 12-16 bit); no
patient, windowing or rescale tags; ``image_labels_train.csv`` (the global labels) and the test
part are not written; a positive the world did not draw (none so far) would get the whole
image as its box.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .core import Exported, SourceRows, dicom, write_csv

#: How the format keeps the pixels (tests/test_export.py): DICOM, min-max scaled on reading.
PIXELS = "minmax"

#: Embedded class -> VinDr-CXR's own class name (as in its annotation files).
CLASS_NAMES = {
    "aortic enlargement": "Aortic enlargement", "atelectasis": "Atelectasis",
    "calcification": "Calcification", "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation", "interstitial lung disease": "ILD",
    "infiltration": "Infiltration", "lung opacity": "Lung Opacity", "nodule": "Nodule/Mass",
    "mass": "Nodule/Mass", "pleural effusion": "Pleural effusion",
    "pleural thickening": "Pleural thickening", "pneumothorax": "Pneumothorax",
    "fibrosis": "Pulmonary fibrosis", "lung lesion": "Other lesion",
}
#: Embedded classes the format folds into one label ("Nodule/Mass"): the real harmonisation
#: reads a positive back as missing for both, so they cannot round-trip (tests/test_export.py).
AMBIGUOUS = ("nodule", "mass")
NO_FINDING = "No finding"
COLUMNS = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
#: Digital X-Ray Image Storage - For Presentation.
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
_ROOT = "1.2.826.0.1.3680043.8.498."  # a UID root for the placeholder study/series/instance


def image_id(seed: int, row: int) -> str:
    return hashlib.md5(f"vindr:{seed}:{row}".encode()).hexdigest()


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    seed, s = src.world.cfg.world_seed, src.image_size
    ids = [image_id(seed, i) for i in range(src.n)]
    images = src.images()
    for i, (iid, im) in enumerate(zip(ids, images)):
        mono1 = int(iid[:8], 16) % 5 == 0
        px = im.astype(np.uint16) * 16  # 12-bit
        uid = f"{_ROOT}{int(iid[:16], 16)}"
        dicom(root / "train" / f"{iid}.dicom", 4095 - px if mono1 else px, bits_stored=12,
              monochrome1=mono1, sop_class=SOP_CLASS,
              uids=(f"{uid}.1", f"{uid}.2", f"{uid}.3"), Modality="DX",
              BodyPartExamined="CHEST", PixelSpacing=[0.139, 0.139])
    rows = []
    for i, iid in enumerate(ids):
        rng = np.random.default_rng([seed, 2, i])
        readers = [f"R{r}" for r in rng.choice(np.arange(1, 18), 3, replace=False)]
        marked: dict[str, list] = {r: [] for r in readers}
        boxes = src.boxes(i)
        for c, y in zip(src.classes, src.labels[i]):
            if y != 1 or c == "no finding":
                continue
            box = boxes.get(c, (0.0, 0.0, float(s), float(s)))
            k = int(rng.choice([1, 2, 3], p=[0.3, 0.3, 0.4]))
            for j, r in enumerate(rng.permutation(readers)[:k]):
                b = np.asarray(box, float)
                if j:  # the other readers draw it a little differently
                    b = np.clip(b + rng.integers(-1, 2, 4), 0, s)
                marked[r].append((CLASS_NAMES[c], *b))
        for r in readers:
            for name, *b in marked[r] or [(NO_FINDING, np.nan, np.nan, np.nan, np.nan)]:
                rows.append((iid, r, name, *b))
    csv = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(root / "annotations" / "annotations_train.csv", csv)
    manifest = pd.DataFrame({"world_row": np.arange(src.n),
                             "file": [f"{src.source}/train/{i}.dicom" for i in ids],
                             "patient": ids})
    return Exported({"imgpath": f"{src.source}/train",
                     "csvpath": f"{src.source}/annotations/annotations_train.csv"}, manifest,
                    ["Nodule/Mass: embedded nodule and mass are read back as missing when "
                     "positive (one label for two classes)"])
