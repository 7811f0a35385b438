"""The book's evidence: every comparison it draws a conclusion from, over training seeds, with
95 % intervals resampled by patient, against its matched control.

The one place that combines trained runs with evaluation: :mod:`.variants` names the runs
(UniChest and its controls) and gets them from the store — :func:`load`, :func:`checkpoint`
and :func:`history` are how a chapter gets a trained model, its checkpoint and its training
history; :mod:`.measures` scores them over seeds with paired patient bootstraps;
:mod:`.claims` lists the paper's claims and measures each; :mod:`.ledger` is the claims
ledger and its cache; :mod:`.alignment` compares the ways of scaling L_BCL (does the
image–text alignment learn?); :mod:`.headroom` measures what source-specific heads could win
on the frozen Conquer encoder next to what Divide wins, and :mod:`.dials` does so per world
dial; :mod:`.grounding_measures` scores grounding against three baselines; :mod:`.transfer`
linear probing and fine-tuning against a randomly initialised encoder; :mod:`.query_study`
compares zero-shot on unseen classes across what the class queries say in training;
:mod:`.paper_tables` regenerates the paper's Tables IV and V with every baseline row (the
module's names stay under ``evidence.paper_tables``).
Everything below is re-exported here (``evidence.variant_table``, ...).
Introduced in ``notebooks/02_conquer.ipynb``; the ledger in ``notebooks/07_claims.ipynb``.
"""

from . import paper_tables
from .alignment import (BCL_SETTINGS, alignment_on, alignment_rule,
                        alignment_study)
from .claims import (CLAIM_KEYS, CLAIMS, Claim, equivalence_verdict, gate_routing,
                     grounding_vs_random, measure_claim, source_gates, transfer_vs_random,
                     zero_shot_sources)
from .dials import (CELL_VARIANTS, STUDY_DIALS, cell_stored, dial_cell, dial_study, dial_world,
                    meaning_by_class)
from .grounding_measures import grounding_baseline_measures, grounding_baseline_table
from .headroom import (headroom_by_class, headroom_measure, headroom_scored,
                       headroom_table, interval_rows)
from .ledger import (EXPENSIVE, FULL, FULL_ENV, HOW_TO_RUN, NOT_RUN, VERSION, WORLD_ONLY,
                     chapter_claims,
                     fmt_interval, full_ledger, grid_table, ledger_rows, ledger_table,
                     not_run_note)
from .measures import (ALPHA, MIN_POS, N_BOOT, Measure, Scored, class_auc_replicates,
                       grounding_by_class, has_classes, in_domain_measure, kept_columns,
                       macro_measure, metric_table, patient_weights, scored, split_sizes,
                       variant_table, with_intervals)
from .query_study import query_text_on, query_text_study, study_views
from .transfer import (ENCODERS, PROTOCOLS, RANDOM, random_encoder, transfer_measures,
                       transfer_predictions, transfer_table, transfer_wide)
from .variants import (BACKBONES, GRID, LEVELS, SEEDS, VARIANTS, Variant, variant_checkpoint,
                       variant_config, variant_history, variant_model)

__all__ = ["ALPHA", "BACKBONES", "paper_tables", "BCL_SETTINGS", "CLAIMS", "CLAIM_KEYS", "Claim", "ENCODERS",
           "EXPENSIVE", "PROTOCOLS", "RANDOM",
           "FULL", "FULL_ENV", "GRID", "HOW_TO_RUN", "LEVELS", "MIN_POS", "Measure", "NOT_RUN",
           "N_BOOT", "SEEDS", "Scored", "VARIANTS", "STUDY_DIALS", "VERSION", "Variant",
           "WORLD_ONLY", "alignment_on", "alignment_rule", "alignment_study", "chapter_claims",
           "cell_stored", "CELL_VARIANTS", "dial_cell", "dial_study", "dial_world", "variant_checkpoint", "class_auc_replicates",
           "equivalence_verdict", "fmt_interval", "full_ledger", "gate_routing", "grid_table",
           "grounding_baseline_measures", "grounding_baseline_table", "grounding_by_class",
           "grounding_vs_random", "has_classes", "headroom_measure",
           "headroom_by_class", "headroom_scored", "headroom_table", "variant_history",
           "in_domain_measure", "interval_rows", "kept_columns", "ledger_table", "variant_model", "macro_measure",
           "meaning_by_class",
           "ledger_rows", "measure_claim", "metric_table", "not_run_note", "patient_weights", "query_text_on",
           "query_text_study", "scored", "study_views",
           "random_encoder", "source_gates", "split_sizes", "transfer_measures",
           "transfer_predictions", "transfer_table", "transfer_vs_random", "transfer_wide",
           "variant_config",
           "variant_table", "with_intervals", "zero_shot_sources"]
