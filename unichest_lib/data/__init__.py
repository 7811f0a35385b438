"""Data: the label spaces, the one sample contract, and the two worlds that fill it (Section III-A).

:mod:`.labels` is the class vocabulary (names, synonyms, the embedded sources' label spaces)
and :mod:`.label_spaces` the one API that answers "which classes does a source observe?" for
either world. :mod:`.samples` is the sample contract ``(x, Y, mask, l, t)``; :mod:`.world` renders
the embedded procedural sources and :mod:`.real` reads the paper's datasets (registry, label
harmonisation, images, parsers). :mod:`.loaders` is the one entry point,
:func:`make_dataset` / :func:`make_loader`, re-exported here; :mod:`.report_filter` turns
reports into the paper's text input (and :mod:`.positions` into each sample's MedKLIP
position indices), :mod:`.descriptions` gives zero-shot class descriptions
and :mod:`.cards` reads the data cards. Data code imports only :mod:`unichest_lib.config` and
:mod:`unichest_lib.fileio` from the rest of the library. Introduced in
``notebooks/00_data.ipynb``.
"""

from .loaders import (REPORT_SOURCES, SPLITS, collate, example_batch, filter_report_texts,
                      label_texts, make_dataset, make_loader)

__all__ = ["REPORT_SOURCES", "SPLITS", "collate", "example_batch", "filter_report_texts",
           "label_texts", "make_dataset", "make_loader"]
