"""ChestX-Det10 (Liu et al. 2020) as Deepwise publishes it: 8-bit PNGs named by number,
``train_data/<n>.png``, and ``train.json``, a list of ``{"file_name", "syms", "boxes",
"polygons"}`` records: per image the class name of each annotated instance and its box
``[x0, y0, x1, y1]`` in pixels of the image (integers).

Conventions reproduced: ChestX-Det10's ten class names (Atelectasis, Calcification,
Consolidation, Effusion, Emphysema, Fibrosis, Fracture, Mass, Nodule, Pneumothorax); an image
without findings has empty lists; every sym has a box, taken from the world's drawing of the
finding (its mask's bounding box, exclusive right/bottom edges). The ``data.yml`` entry sets
``original_size`` to the image size, the size the boxes are in. No patient id: the real
loader counts each image (its number) as a patient.

Placeholders: the images are the world's size (the release's are 1024 px); everything goes in
the release's train part (``train_data`` + ``train.json``; the embedded split travels in
``splits.csv``); each polygon is its box's four corners (the release traces the lesion); a
positive the world did not draw (none so far) would get the whole image as its box; a drawn
finding the labeller missed gets no sym and so no box.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...fileio import atomic_write
from .core import Exported, SourceRows, own_label_names, png8

#: How the format keeps the pixels (tests/test_export.py): PNG-8 is lossless.
PIXELS = "exact"


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    names, s = own_label_names(src.source), src.image_size
    files = [f"{i + 1}.png" for i in range(src.n)]
    for f, im in zip(files, src.images()):
        png8(root / "train_data" / f, im)
    records = []
    for i, f in enumerate(files):
        boxes = src.boxes(i)
        syms, bxs = [], []
        for c, y in zip(src.classes, src.labels[i]):
            if y == 1:
                syms.append(names[c])
                bxs.append([int(round(v)) for v in boxes.get(c, (0, 0, s, s))])
        records.append({"file_name": f, "syms": syms, "boxes": bxs,
                        "polygons": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
                                     for x0, y0, x1, y1 in bxs]})
    atomic_write(root / "train.json", json.dumps(records)).chmod(0o644)
    manifest = pd.DataFrame({"world_row": np.arange(src.n),
                             "file": [f"{src.source}/train_data/{f}" for f in files],
                             "patient": [Path(f).stem for f in files]})
    return Exported({"imgpath": f"{src.source}/train_data",
                     "annotations": f"{src.source}/train.json", "original_size": s}, manifest)
