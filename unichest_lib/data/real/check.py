"""A dry run of a real-data YAML file: does every dataset it lists parse, split and exist on
disk, and what labels does it hold? In seconds, with no model and no training
(``python -m unichest_lib check-data my.yml``).

:func:`check_data` parses each dataset (:func:`.dataset.load_frame`), splits it by patient
(:func:`.harmonise.patient_split`), looks for every image file and reads the first one, and
harmonises its labels (:func:`.harmonise.harmonise`). A YAML file that is itself wrong (an
unknown dataset or option, bad split fractions) raises :class:`~unichest_lib.config.ConfigError`
as training would; a dataset whose folder or metadata is missing, or that cannot be parsed,
is reported in :attr:`DataCheck.problems` and the others are still checked.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import ConfigError
from .dataset import load_frame
from .harmonise import harmonise, observed_classes, patient_split
from .images import read_image
from .registry import _check_options, read_spec

_SPLITS = ("train", "valid", "test")


@dataclass
class DataCheck:
    """What :func:`check_data` found in the YAML file ``path``."""

    path: str
    counts: pd.DataFrame  # source, split, images, patients, missing (image files not on disk)
    labels: pd.DataFrame  # source, class, positives, negatives, missing (all splits together)
    missing_example: dict[str, str] = field(default_factory=dict)  # source -> a missing file
    problems: dict[str, str] = field(default_factory=dict)  # source -> why it was not read

    @property
    def n_missing(self) -> int:
        return int(self.counts["missing"].sum()) if len(self.counts) else 0

    @property
    def ok(self) -> bool:
        """Every dataset parsed and every image file is on disk."""
        return not self.problems and self.n_missing == 0

    def report(self) -> str:
        """The check as text: counts per source and split, missing files, label coverage."""
        out = [f"real-data file {self.path}: {self.counts['source'].nunique()} dataset(s) read"
               + (f", {len(self.problems)} not readable" if self.problems else "")]
        for name, why in self.problems.items():
            out.append(f"  {name}: NOT READABLE: {why}")
        if len(self.counts):
            c = self.counts.assign(cell=[f"{i} ({p})" for i, p in
                                         zip(self.counts["images"], self.counts["patients"])])
            wide = c.pivot(index="source", columns="split", values="cell")
            wide = wide.reindex(index=c["source"].unique(), columns=list(_SPLITS))
            wide["missing files"] = c.groupby("source")["missing"].sum()
            out += ["", "images (patients) per split:", wide.rename_axis(None, axis=1).to_string()]
        out.append("")
        out.append(f"{self.n_missing} image file(s) missing" if self.n_missing else
                   "every image file is on disk")
        for name, p in self.missing_example.items():
            out.append(f"  {name}: e.g. {p}")
        if len(self.labels):
            out += ["", "label coverage (all splits; missing = not stated or uncertain):",
                    self.labels.to_string(index=False)]
        return "\n".join(out)


def check_data(path: str | os.PathLike) -> DataCheck:
    """Check every dataset of the real-data YAML file ``path`` (see the module docstring)."""
    spec, problems = _read(path)
    counts, labels, examples = [], [], {}
    for name, opts in spec["datasets"].items():
        if name in problems:
            continue
        try:
            f = load_frame(name, opts)
            classes = observed_classes(name)
            y = harmonise(f, name, classes)
            split = patient_split(f["patient"], name, spec.get("split"))
            exists = np.fromiter((os.path.isfile(p) for p in f["path"]), bool, len(f))
            if exists.any():  # one image really read: catches a missing reader (pydicom)
                read_image(f["path"].iloc[int(np.argmax(exists))], 32, dataset=name)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - reported per dataset; the others still checked
            problems[name] = _one_line(e)
            continue
        for s in _SPLITS:
            rows = split == s
            counts.append(dict(source=name, split=s, images=int(rows.sum()),
                               patients=int(f["patient"][rows].nunique()),
                               missing=int((rows & ~exists).sum())))
        if not exists.all():
            examples[name] = str(f["path"].iloc[int(np.argmin(exists))])
        for j, c in enumerate(classes):
            labels.append(dict(source=name, **{"class": c}, positives=int((y[:, j] == 1).sum()),
                               negatives=int((y[:, j] == 0).sum()),
                               missing=int(np.isnan(y[:, j]).sum())))
    cols_c = ["source", "split", "images", "patients", "missing"]
    cols_l = ["source", "class", "positives", "negatives", "missing"]
    return DataCheck(str(path), pd.DataFrame(counts, columns=cols_c),
                     pd.DataFrame(labels, columns=cols_l), examples, problems)


def _read(path) -> tuple[dict, dict[str, str]]:
    """The validated YAML and, per dataset whose folder or metadata file is missing, why."""
    try:
        return read_spec(path), {}
    except FileNotFoundError:  # the structure is valid; find every dataset with this problem
        import yaml

        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    problems = {}
    for name, opts in spec["datasets"].items():
        try:
            _check_options(Path(path), name, opts)
        except FileNotFoundError as e:
            problems[name] = _one_line(e)
    return spec, problems


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, (OSError, ValueError)) else f"{type(e).__name__}: {text}"


__all__ = ["DataCheck", "check_data"]
