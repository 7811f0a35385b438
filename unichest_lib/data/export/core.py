"""What every format writer shares: the rows of one embedded source (:class:`SourceRows`),
what a writer hands back (:class:`Exported`), image writers, and :func:`export_world`, which
writes every source, the ``splits.csv`` that carries the embedded split over, the
``manifest.csv`` that maps each written file back to its world row, and last the
``data.yml`` that points the real loaders at it all.

Introduced in ``notebooks/00_data.ipynb``; the real loaders are :mod:`unichest_lib.data.real`.
"""

from __future__ import annotations

import importlib
import io
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ... import config as C
from ...fileio import atomic_write
from .. import labels as L
from ..world import World, world_of
from ..world.population import FINDINGS, source_labels

#: The module of :mod:`unichest_lib.data.export` that writes each dataset's layout.
FORMATS: dict[str, str] = {
    "chestxray14": "chestxray14", "chexpert": "chexpert", "mimic": "mimic",
    "padchest": "padchest", "shenzhen": "shenzhen", "vindr": "vindr", "siim": "siim",
    "openi": "openi", "chestxdet10": "chestxdet10",
}
#: Files :func:`export_world` writes at the top of the export folder.
DATA_YML, SPLITS_CSV, MANIFEST_CSV = "data.yml", "splits.csv", "manifest.csv"


@dataclass
class SourceRows:
    """Every image of one embedded source, as a writer needs it (row ``i`` is world row
    ``i``). ``labels`` are over ``classes`` (the source's embedded label space): 1, 0 or NaN
    (uncertain for CheXpert-style sources); ``state`` is the labeller's record over every
    finding of the world (:data:`FINDINGS`)."""

    world: World
    source: str

    @property
    def n(self) -> int:
        return self.world.size(self.source)

    @cached_property
    def population(self):
        return self.world.population(self.source)

    @property
    def split(self) -> np.ndarray:
        return self.population.split

    @cached_property
    def patient_index(self) -> np.ndarray:
        """The world's patient number of each image (``"mimic-p000012"`` -> 12)."""
        return np.array([int(p.rsplit("-p", 1)[1]) for p in self.population.patients], np.int64)

    @property
    def classes(self) -> tuple[str, ...]:
        return L.embedded_label_space(self.source)

    @cached_property
    def labels(self) -> np.ndarray:
        return source_labels(self.population.state, self.source, self.classes)

    @property
    def state(self) -> np.ndarray:
        return self.population.state

    @property
    def image_size(self) -> int:
        return self.world.cfg.image_size

    def images(self, rows: Sequence[int] | None = None) -> np.ndarray:
        """uint8 (len(rows), S, S) images (every row when None)."""
        return self.world.images(self.source, np.arange(self.n) if rows is None else rows)

    def report(self, i: int) -> str:
        return self.world.report(self.source, int(i))[0]

    def boxes(self, i: int) -> dict[str, tuple[float, float, float, float]]:
        """{class: (x0, y0, x1, y1)} in pixels for every finding drawn in image ``i``."""
        seg, boxes = self.world.seg_and_boxes(self.source, int(i), self.classes)
        return {c: tuple(map(float, b)) for c, b in zip(self.classes, boxes) if not np.isnan(b[0])}


@dataclass
class Exported:
    """What a writer returns: its ``data.yml`` entry (paths relative to the export folder)
    and one manifest row per written image: ``world_row``, ``file`` (relative to the export
    folder, the path the real parser will build), ``patient`` (the id the real parser reads)."""

    entry: dict
    manifest: pd.DataFrame
    notes: list[str] = field(default_factory=list)


Writer = Callable[[SourceRows, Path], Exported]


def writer(source: str) -> Writer:
    """The ``write`` function of ``source``'s format module."""
    if source not in FORMATS:
        raise ValueError(f"no exporter for source {source!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"{__package__}.{FORMATS[source]}").write


# ---- image and table writers -------------------------------------------------------------
def png8(path: Path, a: np.ndarray) -> None:
    """An 8-bit greyscale PNG (lossless)."""
    from PIL import Image

    _write_image(path, lambda f: Image.fromarray(np.asarray(a, np.uint8), "L").save(f, "PNG"))


def png16(path: Path, a: np.ndarray) -> None:
    """A 16-bit greyscale PNG of a uint16 array (PadChest's format)."""
    from PIL import Image

    a = np.asarray(a, np.uint16)
    _write_image(path, lambda f: Image.fromarray(a).save(f, "PNG"))


def jpeg(path: Path, a: np.ndarray, quality: int = 95) -> None:
    """An 8-bit greyscale JPEG (lossy: MIMIC-CXR-JPG and CheXpert ship JPEG)."""
    from PIL import Image

    _write_image(path, lambda f: Image.fromarray(np.asarray(a, np.uint8), "L").save(
        f, "JPEG", quality=quality))


def dicom(path: Path, a: np.ndarray, *, bits_stored: int, monochrome1: bool = False,
          sop_class: str, uids: tuple[str, str, str], **tags) -> None:
    """An uncompressed (Explicit VR Little Endian) greyscale DICOM file of the uint8 or
    uint16 array ``a`` as stored (a MONOCHROME1 caller passes it already inverted);
    ``uids`` = (study, series, SOP instance); ``tags`` are further attributes (Modality, ...).
    Shared by the VinDr-CXR and SIIM-ACR writers."""
    from pydicom import dcmwrite
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    a = np.ascontiguousarray(a)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim != 2:
        raise TypeError(f"dicom: expected a 2-D uint8/uint16 array, got {a.dtype} {a.shape}")
    study, series, instance = uids
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = a.shape
    ds.BitsAllocated = 8 * a.itemsize
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = a.tobytes()
    _write_image(path, lambda f: dcmwrite(f, ds, enforce_file_format=True))


def _write_image(path: Path, save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    save(buf)
    path.write_bytes(buf.getvalue())


def write_csv(path: Path, frame: pd.DataFrame, **kw) -> None:
    """A CSV (gzip when the name ends in .gz), written atomically."""
    compression = "gzip" if str(path).endswith(".gz") else None
    data = frame.to_csv(index=False, compression=None, **kw)
    if compression:
        import gzip

        atomic_write(path, gzip.compress(data.encode("utf-8"), mtime=0))
    else:
        atomic_write(path, data)
    Path(path).chmod(0o644)  # shared data, not a private temporary file


# ---- the whole export ----------------------------------------------------------------------
@dataclass
class ExportReport:
    """Where the export went and what it cost, per dataset."""

    out: Path
    data_yml: Path
    table: pd.DataFrame  # dataset, images, files, MB, seconds


def export_world(cfg: C.Config, out: str | Path, sources: Sequence[str] | None = None, *,
                 progress: bool = True) -> ExportReport:
    """Write the embedded world of ``cfg`` into ``out`` in each real dataset's own layout.

    ``sources`` defaults to every source of the world. Besides each dataset's folder, writes
    ``splits.csv`` (dataset, patient, split: the embedded split, which ``data.yml`` names as
    its ``split``), ``manifest.csv`` (dataset, world_row, file, patient, split) and, last,
    ``data.yml``.
    """
    import yaml

    out = Path(out)
    sources = tuple(C.ALL_SOURCES if sources is None else sources)
    bad = [s for s in sources if s not in FORMATS]
    if bad:
        raise ValueError(f"unknown source(s) {bad}; known: {', '.join(FORMATS)}")
    world = world_of(cfg)
    out.mkdir(parents=True, exist_ok=True)
    entries, manifests, rows = {}, [], []
    for s in sources:
        t0 = time.perf_counter()
        world.prepare([s])
        src = SourceRows(world, s)
        res = writer(s)(src, out)
        m = res.manifest.copy()
        m.insert(0, "dataset", s)
        m["split"] = src.split[m["world_row"].to_numpy()]
        manifests.append(m)
        entries[s] = res.entry
        root = out / s
        files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
        rows.append((s, len(m), len(files), sum(p.stat().st_size for p in files) / 1e6,
                     time.perf_counter() - t0))
    manifest = pd.concat(manifests, ignore_index=True)
    splits = manifest[["dataset", "patient", "split"]].drop_duplicates()
    clash = splits.duplicated(["dataset", "patient"], keep=False)
    if clash.any():
        raise AssertionError(f"patients in two splits: {splits[clash].head().to_dict('records')}")
    write_csv(out / SPLITS_CSV, splits)
    write_csv(out / MANIFEST_CSV, manifest)
    spec = {"datasets": entries, "split": SPLITS_CSV}
    header = (f"# The embedded world (profile {cfg.profile}, world_seed {cfg.world_seed}, "
              f"heterogeneity {cfg.heterogeneity}) written in each real dataset's layout by\n"
              "# python -m unichest_lib.world export. Paths are relative to this file.\n")
    atomic_write(out / DATA_YML, header + yaml.safe_dump(spec, sort_keys=False))
    (out / DATA_YML).chmod(0o644)
    table = pd.DataFrame(rows, columns=["dataset", "images", "files", "MB", "seconds"])
    return ExportReport(out, out / DATA_YML, table)



# ---- label vocabulary ----------------------------------------------------------------------
def own_label_names(source: str) -> dict[str, str]:
    """{canonical class: the dataset's own label name} for ``source`` (the inverse of
    :func:`unichest_lib.data.real.label_mapping`, for labels that feed exactly one class)."""
    from ..real.harmonise import label_mapping

    out: dict[str, str] = {}
    for lab, classes in label_mapping(source).items():
        if len(classes) == 1:
            out.setdefault(classes[0], lab)
    return out


def follow_up(patient_index: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... per image of the same patient, in row order (ChestX-ray14's "Follow-up #",
    CheXpert's study number)."""
    s = pd.Series(patient_index)
    return s.groupby(s).cumcount().to_numpy()


__all__ = ["DATA_YML", "Exported", "ExportReport", "FORMATS", "MANIFEST_CSV", "SPLITS_CSV",
           "SourceRows", "dicom", "export_world", "follow_up", "jpeg", "own_label_names",
           "png16", "png8", "write_csv", "writer"]
