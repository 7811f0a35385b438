"""Training: the losses, augmentation, trainer and stages of the paper's Section III-C, and
the artifact store that decides where every trained checkpoint lives.

:mod:`.losses` (Eqs. 3, 4, 6, 7) and :mod:`.augment` (Fourier amplitude mixup) are what a step
computes; :mod:`.trainer` runs the steps (with :mod:`.optim`, :mod:`.rng`, :mod:`.distributed`
and, for Divide, the stored frozen patches of :mod:`.features`); :mod:`.stages` are Conquer,
Divide and the compute-matched control, each writing only where it is told;
:mod:`.checkpoints` is the safetensors file format; :mod:`.store` is the one orchestrator,
filing artifacts under the keys of the leaf module :mod:`.keys` and training what is missing.
Training imports evaluation only for the validation metric (:mod:`unichest_lib.evaluation.
metrics`). Introduced in ``notebooks/02_conquer.ipynb`` (Conquer) and
``notebooks/03_divide.ipynb`` (Divide).
"""

# The artifact store serves Trainer.fit calls that have no out_dir; importing it registers it.
from . import store  # noqa: E402,F401
