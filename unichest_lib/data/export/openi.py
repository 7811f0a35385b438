"""Open-I / Indiana University chest X-rays (Demner-Fushman et al. 2016) as NLM ships them:
8-bit PNGs ``NLMCXR_png/<imageid>.png`` (``CXR<uid>_IM-<nnnn>-<kkkk>``) and the report
archive ``NLMCXR_reports.tgz``: ``ecgen-radiology/<uid>.xml``, one eCitation per report with
``<uId id="CXR<uid>"/>``, ``<AbstractText Label="...">`` sections, ``<MeSH>`` terms and one
``<parentImage id=...>`` per image.

Conventions reproduced: the embedded report goes into FINDINGS (all sentences but the last)
and IMPRESSION (the last; the whole report when it is one sentence), without its own heading;
COMPARISON and INDICATION are present, as in the release. Labels travel as MeSH terms, the
only place Open-I has them: a ``<major>`` heading ("Pulmonary Atelectasis", "Hernia, Hiatal",
...) and the lowercase ``<automatic>`` term torchxrayvision's ``Openi_Dataset`` matches
("atelectasis", "hiatal hernia", ...); ``<major>normal</major>`` and no automatic term when
nothing is positive. Consolidation, which torchxrayvision does not read, still goes out as a
MeSH term. The report id is the patient id the real loader reads.

Placeholders: one report (study) per image, numbered from the world row (the world draws one
image per Open-I patient; the release pairs a frontal and a lateral image per report);
COMPARISON / INDICATION text, captions and dates. The images are not in torchxrayvision's
bundled view tables, so the ``data.yml`` entry says ``views_from: all`` (keep every image of
the archive; the world's images are frontal).
"""

from __future__ import annotations

import io
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from ...fileio import atomic_write
from .core import Exported, SourceRows, png8

#: How the format keeps the pixels (tests/test_export.py): PNG-8 is lossless.
PIXELS = "exact"

#: Embedded class -> (MeSH major heading, MeSH automatic term) as Open-I's XML has them.
MESH = {
    "atelectasis": ("Pulmonary Atelectasis", "atelectasis"),
    "cardiomegaly": ("Cardiomegaly", "cardiomegaly"),
    "pleural effusion": ("Pleural Effusion", "pleural effusion"),
    "infiltration": ("Infiltrate", "infiltrates"),
    "mass": ("Mass", "mass"),
    "nodule": ("Nodule", "nodule"),
    "pneumonia": ("Pneumonia", "pneumonia"),
    "pneumothorax": ("Pneumothorax", "pneumothorax"),
    "consolidation": ("Consolidation", "consolidation"),
    "edema": ("Pulmonary Edema", "pulmonary edema"),
    "emphysema": ("Pulmonary Emphysema", "pulmonary emphysema"),
    "fibrosis": ("Pulmonary Fibrosis", "pulmonary fibrosis"),
    "pleural thickening": ("Thickening/pleura", "pleural thickening"),
    "hernia": ("Hernia, Hiatal", "hiatal hernia"),
}
ARCHIVE = "NLMCXR_reports.tgz"


def sections(report: str) -> dict[str, str]:
    """{"FINDINGS": ..., "IMPRESSION": ...} of an embedded report (its heading dropped)."""
    body = re.sub(r"^\s*(FINDINGS|IMPRESSION)\s*:\s*", "", report or "").strip()
    sent = [s for s in re.split(r"(?<=[.!?])\s+", body) if s]
    if len(sent) < 2:
        return {"IMPRESSION": body}
    return {"FINDINGS": " ".join(sent[:-1]), "IMPRESSION": sent[-1]}


def report_xml(uid: int, image_ids: list[str], report: str, positives: list[str]) -> bytes:
    """One ``ecgen-radiology/<uid>.xml`` in the release's structure."""
    e = ET.Element("eCitation")
    ET.SubElement(e, "meta", type="rr")
    ET.SubElement(e, "uId", id=f"CXR{uid}")
    ET.SubElement(e, "pmcId", id=str(uid))
    ET.SubElement(e, "docSource").text = "CXR"
    ET.SubElement(e, "IUXRId", id=str(uid))
    ET.SubElement(e, "licenseType").text = "open-access"
    ET.SubElement(e, "articleDate").text = "2013-08-01"
    ET.SubElement(e, "publisher").text = "Indiana University"
    ET.SubElement(e, "title").text = "Indiana University Chest X-ray Collection"
    art = ET.SubElement(ET.SubElement(e, "MedlineCitation", Owner="Indiana University",
                                      Status="supplied by publisher"), "Article",
                        PubModel="Electronic")
    ET.SubElement(art, "ArticleTitle").text = "Indiana University Chest X-ray Collection"
    abstract = ET.SubElement(art, "Abstract")
    parts = {"COMPARISON": "None.", "INDICATION": "XXXX-year-old with chest pain.",
             **sections(report)}
    for label, text in parts.items():
        ET.SubElement(abstract, "AbstractText", Label=label).text = text
    mesh = ET.SubElement(e, "MeSH")
    for c in positives:
        ET.SubElement(mesh, "major").text = MESH[c][0]
    for c in positives:
        ET.SubElement(mesh, "automatic").text = MESH[c][1]
    if not positives:
        ET.SubElement(mesh, "major").text = "normal"
    for k, iid in enumerate(image_ids):
        im = ET.SubElement(e, "parentImage", id=iid)
        ET.SubElement(im, "figureId").text = f"F{k + 1}"
        ET.SubElement(im, "caption").text = "PA chest x-XXXX."
        ET.SubElement(ET.SubElement(im, "panel", type="single"), "url").text = \
            f"/hadoop/storage/radiology/extract/{iid}.jpg"
    ET.indent(e, "   ")
    return ET.tostring(e, encoding="utf-8", xml_declaration=True)


def write(src: SourceRows, out: Path) -> Exported:
    root = out / src.source
    uids = np.arange(src.n) + 1
    image_ids = [f"CXR{u}_IM-{u % 10000:04d}-1001" for u in uids]
    for iid, im in zip(image_ids, src.images()):
        png8(root / "NLMCXR_png" / f"{iid}.png", im)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        tar.addfile(_info("ecgen-radiology/", tarfile.DIRTYPE, 0))
        for i, (u, iid) in enumerate(zip(uids, image_ids)):
            pos = [c for c, y in zip(src.classes, src.labels[i]) if y == 1 and c in MESH]
            data = report_xml(int(u), [iid], src.report(i), pos)
            tar.addfile(_info(f"ecgen-radiology/{u}.xml", tarfile.REGTYPE, len(data)),
                        io.BytesIO(data))
    atomic_write(root / ARCHIVE, _zero_gzip_mtime(buf.getvalue())).chmod(0o644)
    manifest = pd.DataFrame({"world_row": np.arange(src.n),
                             "file": [f"{src.source}/NLMCXR_png/{i}.png" for i in image_ids],
                             "patient": [f"CXR{u}" for u in uids]})
    return Exported({"imgpath": f"{src.source}/NLMCXR_png", "xmlpath": f"{src.source}/{ARCHIVE}",
                     "views_from": "all"}, manifest)


def _info(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.size, t.mtime = kind, size, 0
    t.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return t


def _zero_gzip_mtime(data: bytes) -> bytes:
    """The same archive bytes for the same world (gzip stores a time in bytes 4..7)."""
    return data[:4] + b"\0\0\0\0" + data[8:]
