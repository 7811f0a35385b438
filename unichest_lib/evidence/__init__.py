"""The book's evidence: every comparison it draws a conclusion from, over training seeds, with
95 % intervals resampled by patient, against its matched control.

The one place that combines trained runs with evaluation. What the chapters use is exported
here, and only that:

* the runs: :data:`SEEDS`; :func:`plan` (what a build at a profile runs: seeds, bootstrap
  size, the λ × K grid, backbones, whether the full ledger is on); :func:`variant_model`,
  :func:`variant_checkpoint` and :func:`variant_history`, the one way a chapter gets a trained
  model of a named variant (UniChest or one of its controls), its checkpoint and its history;
* the tables, measured over seeds with paired patient bootstraps: :func:`variant_table`,
  :func:`seen_unseen_table`, :func:`metric_table`, :func:`grounding_diagnosis`,
  :func:`grounding_baseline_table`, :func:`transfer_table`, :func:`headroom_table`,
  :func:`grid_table`;
* the claims ledger: :func:`chapter_claims`, :func:`ledger_rows` and :func:`not_run_note`;
* the optional studies, each a :class:`~.measures.Study` (ran or not, its tables, a note):
  :func:`alignment_study`, :func:`query_text_study`, :func:`dial_study`; and the recorded
  :func:`schedule_study` (how long Conquer trains, :mod:`.record`) and
  :func:`reproduction_study` (this build's live runs next to their recorded twins);
* :mod:`.paper_tables`, the paper's Tables IV and V with every baseline row (chapter 06).

Everything else stays in its module, for the library and the tests: :mod:`.variants` (the
named runs), :mod:`.measures` (scores over seeds), :mod:`.replay` (each study's scores from
this build's runs or from the record, never both), :mod:`.claims` and :mod:`.ledger`,
:mod:`.alignment`, :mod:`.query_study`, :mod:`.headroom` and :mod:`.dials`,
:mod:`.grounding_measures`, :mod:`.transfer` and :mod:`.per_class` (the paper's
per-category Figs. 4–6 and Table I, which chapter 06 imports from that module). The ``mean [lo, hi]`` text of these tables
and the ledger as the book prints it are :mod:`unichest_lib.book.tables`.
Introduced in ``notebooks/02_conquer.ipynb``; the ledger in ``notebooks/07_claims.ipynb``.
"""

from . import paper_tables
from .alignment import alignment_study
from .dials import dial_study
from .attention_study import grounding_diagnosis
from .grounding_measures import grounding_baseline_table
from .headroom import headroom_table
from .ledger import chapter_claims, grid_table, ledger_rows, not_run_note, plan
from .measures import metric_table, seen_unseen_table, variant_table
from .query_study import query_text_study
from .reproduce import reproduction_study
from .schedule import schedule_study
from .transfer import transfer_table
from .variants import SEEDS, variant_checkpoint, variant_history, variant_model

__all__ = ["SEEDS", "alignment_study", "chapter_claims", "dial_study", "grid_table",
           "grounding_baseline_table", "grounding_diagnosis", "headroom_table", "ledger_rows",
           "metric_table", "not_run_note", "paper_tables", "plan", "query_text_study",
           "reproduction_study", "schedule_study", "seen_unseen_table", "transfer_table",
           "variant_checkpoint", "variant_history", "variant_model", "variant_table"]
