"""ChestX-ray14 (Wang et al. 2017) as NIH ships it: flat PNGs named
``<patient:08d>_<follow-up:03d>.png`` and ``Data_Entry_2017_v2020.csv`` with ``|``-joined
"Finding Labels" ("No Finding" when none). The format has no "missing": a class the labeller
did not record is absent. Age and sex are placeholders (the embedded world has none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .core import Exported, SourceRows, follow_up, own_label_names, png8, write_csv

COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
           "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
           "OriginalImagePixelSpacing[x", "y]"]


#: How the format keeps the pixels (tests/test_export.py): PNG-8 is lossless.
PIXELS = "exact"


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    names = own_label_names(src.source)
    pid, fu = src.patient_index, follow_up(src.patient_index)
    files = [f"{p:08d}_{k:03d}.png" for p, k in zip(pid, fu)]
    images = src.images()
    for f, im in zip(files, images):
        png8(root / "images" / f, im)
    findings = []
    for y in src.labels:
        pos = [names[c] for c, v in zip(src.classes, y) if v == 1 and c in names]
        findings.append("|".join(sorted(pos)) or "No Finding")
    s = src.image_size
    csv = pd.DataFrame({"Image Index": files, "Finding Labels": findings, "Follow-up #": fu,
                        "Patient ID": pid, "Patient Age": 40 + pid % 40,
                        "Patient Gender": np.where(pid % 2 == 0, "M", "F"),
                        "View Position": "PA", "OriginalImage[Width": s, "Height]": s,
                        "OriginalImagePixelSpacing[x": 0.143, "y]": 0.143})[COLUMNS]
    write_csv(root / "Data_Entry_2017_v2020.csv", csv)
    manifest = pd.DataFrame({"world_row": np.arange(src.n),
                             "file": [f"{src.source}/images/{f}" for f in files],
                             "patient": pid.astype(str)})
    return Exported({"imgpath": f"{src.source}/images",
                     "csvpath": f"{src.source}/Data_Entry_2017_v2020.csv"}, manifest)
