"""The embedded world written in each real dataset's own on-disk layout, so that the real
loaders (:mod:`unichest_lib.data.real`) can be run, and checked, end to end without the real
data::

    python -m unichest_lib.world export --out /tmp/world --profile smoke
    python -m unichest_lib conquer --profile smoke --data /tmp/world/data.yml

One module per dataset writes its layout (:data:`~.core.FORMATS`): file names, folder tree,
image format (PNG, 16-bit PNG, JPEG, DICOM), label vocabulary (1/0/-1/blank, "No Finding",
per-reader rows, label lists), reports and boxes as the real release has them. The embedded
split travels in ``splits.csv``; ``manifest.csv`` maps each file back to its world row, which
is how ``tests/test_export.py`` checks that both paths give the same samples.

Introduced in ``notebooks/00_data.ipynb``.
"""

from .agreement import compare
from .core import (DATA_YML, FORMATS, MANIFEST_CSV, SPLITS_CSV, Exported, ExportReport,
                   SourceRows, export_world, writer)

__all__ = ["DATA_YML", "Exported", "ExportReport", "FORMATS", "MANIFEST_CSV", "SPLITS_CSV",
           "SourceRows", "compare", "export_world", "writer"]
