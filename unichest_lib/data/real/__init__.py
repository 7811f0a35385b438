"""The paper's real datasets (Table III), harmonised onto the library's union label space.

Nothing here downloads anything: a user who has the datasets writes a small YAML file and points
``cfg.data`` at it::

    datasets:
      chestxray14: {imgpath: /data/nih/images}            # metadata CSV ships with torchxrayvision
      chexpert:    {imgpath: /data/CheXpert-v1.0, csvpath: /data/CheXpert-v1.0/train.csv,
                    uncertain: ignore}                      # U-Ignore (default), ones or zeros
      mimic:       {imgpath: /data/mimic-cxr-jpg/files, csvpath: .../mimic-cxr-2.0.0-chexpert.csv.gz,
                    metacsvpath: .../mimic-cxr-2.0.0-metadata.csv.gz, reportpath: /data/mimic-cxr}
      vindr:       {imgpath: /data/vindr/train}             # needs pydicom
    split: {valid: 0.1, test: 0.2}                          # optional, patient-level fractions

Each dataset is parsed (:mod:`.parsers`; ``torchxrayvision``'s class for it, with its bundled
metadata where it ships one) into a *frame*: one row per image with the image ``path``, the
``patient`` id, the dataset's own label columns (1 / 0 / NaN) and, for report sources, the
``report``. The frame is then relabelled onto the canonical classes (:mod:`.harmonise`;
:func:`label_mapping` shows every dataset label and where it went), split into patient-disjoint
train/valid/test by hashing the patient id, its images read by :mod:`.images`, and wrapped in
the one :class:`~unichest_lib.data.samples.MultiSourceDataset` contract (:mod:`.dataset`). The
registry of datasets and the YAML file are :mod:`.registry`.

Options per dataset (all optional except ``imgpath``): ``csvpath`` (and ``metacsvpath``,
``reportpath`` for MIMIC-CXR, ``annotations`` for ChestX-Det10), ``views`` (default frontal:
``[PA, AP]``), ``on_missing`` (``error``, the default, or ``skip`` images that are not on disk,
with a logged count), and for CheXpert/MIMIC-CXR ``uncertain`` (``ignore`` = -1 becomes missing,
``ones``, ``zeros``; Irvin et al. 2019) and ``blank`` (``negative``, the default: a finding the
report does not mention is absent; or ``missing``).

:func:`check_data` (:mod:`.check`) is a dry run of a YAML file: images and patients per
source and split, missing image files and label coverage, without a model
(``python -m unichest_lib check-data my.yml``).

Introduced in ``notebooks/00_data.ipynb``; see also ``data_cards/``.
"""

from .check import DataCheck, check_data
from .dataset import load_frame, make_real_dataset
from .harmonise import (SPLIT_FRACTIONS, check_label_values, harmonise, label_mapping,
                        label_mapping_table, observed_classes, patient_split,
                        split_from_file)
from .images import read_image
from .parsers import PARSERS, mimic_reports, openi_reports, require_columns
from .registry import (CHESTXDET10_LABELS, CHEX_COLS, COMMON_OPTIONS, FRONTAL, LABELS,
                       REAL_DATASETS, RealDataset, get, read_spec)

__all__ = ["CHESTXDET10_LABELS", "CHEX_COLS", "COMMON_OPTIONS", "DataCheck", "FRONTAL", "LABELS",
           "PARSERS", "REAL_DATASETS", "RealDataset", "SPLIT_FRACTIONS", "check_data",
           "check_label_values", "get",
           "harmonise", "label_mapping", "label_mapping_table", "load_frame",
           "make_real_dataset", "mimic_reports", "observed_classes", "openi_reports",
           "patient_split", "read_image", "read_spec", "require_columns", "split_from_file"]
