"""Evaluation: what a trained model is worth, measured the paper's way (Sections IV-C to V).

:mod:`.metrics` (AUC / F1 / ACC / AP at the max-F1 threshold) and :mod:`.stats` (patient-level
bootstrap, paired differences, DeLong, seed intervals, the verdict rule) turn scores into
numbers; :mod:`.classification` scores in-domain and zero-shot (Tables IV, V),
:mod:`.grounding` the cross-attention heatmaps (Fig. 7), :mod:`.grounding_references` three
heatmaps that never look at the image, to score them against, :mod:`.finetune` the transfer of
the image encoder (Table II), :mod:`.cost` parameters and FLOPs, :mod:`.heterogeneity` how far
apart the sources are (Fig. 1). Evaluation takes a model as an argument; it never trains one and
never imports the training code, except :mod:`unichest_lib.training.losses` for the
fine-tuning loss. Introduced in ``notebooks/01_source_heterogeneity.ipynb`` (heterogeneity)
and ``notebooks/04_evaluate.ipynb`` (the rest).
"""
