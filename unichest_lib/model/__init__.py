"""The model of the paper's Section III: encoders, query networks and the MoE-QN (Eqs. 1, 2, 5).

:mod:`.encoders` holds the image encoder Φ_image and the patch grid's positional code,
:mod:`.text` the text encoder Φ_text, :mod:`.query` the (batched) query networks,
:mod:`.unichest` the :class:`UniChest` module that joins them with the gate Φ1 and the
projection Φ2, and :mod:`.inference` the one way the library runs a model for inference (eval
mode, inference mode, bf16 where native). The model never imports training or evaluation code.
Introduced in ``notebooks/02_conquer.ipynb`` (Conquer) and ``notebooks/03_divide.ipynb``
(Divide).
"""

from .encoders import ImageEncoder, sincos_2d
from .query import QueryNetworks
from .unichest import (BCL_LOGIT_SCALE_INIT, BCL_MAX_SCALE, MODEL_STAGES, UniChest,
                       combine_probabilities, combine_scores, count_parameters)

__all__ = ["BCL_LOGIT_SCALE_INIT", "BCL_MAX_SCALE", "ImageEncoder", "MODEL_STAGES",
           "QueryNetworks", "UniChest", "combine_probabilities", "combine_scores",
           "count_parameters", "sincos_2d"]
