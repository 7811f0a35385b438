"""Book support: what only the chapters (and the book's own pages) use.

:mod:`.notebook` opens and closes every chapter (parameter checks, seeding, the offline
renderer, hardware line), :mod:`.tables` turns library results into readable tables
(column names, data cards as Markdown, the query networks' parameters, mean gate weights),
:mod:`.figures` builds every plotly figure and the one heat-map overlay, :mod:`.explorer` is
the grounding widget, :mod:`.walkthrough` picks and draws chapter 04's one-image example,
and :mod:`.badinputs` renders the appendix page of bad inputs. Nothing else in the library
imports this package. Introduced in ``notebooks/00_data.ipynb``.
"""
