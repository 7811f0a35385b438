"""The Shenzhen chest X-ray set (Jaeger et al. 2014) as the NLM ships it, the
``ChinaSet_AllFiles`` folder: 8-bit PNGs ``CXR_png/CHNCXR_<NNNN>_<L>.png`` and one clinical
reading per image, ``ClinicalReadings/CHNCXR_<NNNN>_<L>.txt``, where ``L`` is the label
(1 = tuberculosis, 0 = normal) and the only label there is: torchxrayvision's
``NLMTB_Dataset`` reads it from the file name's last digit and lists ``CXR_png``; nothing else.

Reproduced conventions: as in the release, the normal images are numbered first
(``CHNCXR_0001_0`` ...) and the TB images after them, each group in world row order; the
dataset publishes no patient ids, so the parser takes ``CHNCXR_<NNNN>`` as the patient (the
embedded Shenzhen has one image per patient). A reading is two lines, sex and age
(``male 35yrs``), then ``normal`` or where the TB sits (``PTB in the right upper field``, from
the embedded finding's side and height).

Placeholders: sex and age in the readings; the readings are not read by any loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..world.population import FINDINGS
from .core import Exported, SourceRows, png8

#: How the format keeps the pixels (tests/test_export.py): PNG-8 is lossless.
PIXELS = "exact"
#: The release folder; ``imgpath`` points at it.
RELEASE = "ChinaSet_AllFiles"


def _reading(src: SourceRows, i: int, tb: bool) -> str:
    pi = int(src.patient_index[i])
    who = f"{'male' if pi % 3 else 'female'} {18 + pi * 7 % 60}yrs"
    if not tb:
        return f"{who}\nnormal\n"
    j = FINDINGS.index("tuberculosis")
    side = "right" if src.population.side[i, j] > 0 else "left"
    v = float(src.population.v[i, j])
    zone = "upper" if v < -0.15 else ("middle" if v < 0.25 else "lower")
    return f"{who}\nPTB in the {side} {zone} field\n"


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source / RELEASE
    y = src.labels[:, src.classes.index("tuberculosis")]
    if np.isnan(y).any():
        raise ValueError("shenzhen export: the format has no missing label (file name digit)")
    tb = y == 1
    order = np.concatenate([np.flatnonzero(~tb), np.flatnonzero(tb)])  # normals first
    number = np.empty(src.n, np.int64)
    number[order] = np.arange(1, src.n + 1)
    stems = [f"CHNCXR_{k:04d}_{int(t)}" for k, t in zip(number, tb)]
    for s, im in zip(stems, src.images()):
        png8(root / "CXR_png" / f"{s}.png", im)
    (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(stems):
        (root / "ClinicalReadings" / f"{s}.txt").write_text(_reading(src, i, tb[i]),
                                                              encoding="utf-8")
    manifest = pd.DataFrame({"world_row": np.arange(src.n),
                             "file": [f"{src.source}/{RELEASE}/CXR_png/{s}.png" for s in stems],
                             "patient": [s.rsplit("_", 1)[0] for s in stems]})
    return Exported({"imgpath": f"{src.source}/{RELEASE}"}, manifest)
