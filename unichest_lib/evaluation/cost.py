"""Cost of UniChest: parameters and FLOPs per image, Conquer-only vs the full MoE-QN
(paper Section V-A2: 44.3 GFLOPs for the single-query-network model vs 45.5 for UniChest
with K = 4).

FLOPs are *measured* by tracing one forward pass with fvcore's ``FlopCountAnalysis``, not
computed by hand. Conventions, stated so the numbers can be compared:

* fvcore counts one multiply-add as one "flop" (i.e. it counts MACs). The column ``GMACs``
  is fvcore's number; ``GFLOPs`` = 2 x GMACs, the convention under which a ResNet-50 at
  512 x 512 costs about 43 GFLOPs, i.e. the scale of the paper's 44.3.
* fvcore has no counting rule for ``aten::baddbmm`` (the batched linear layers of the query
  networks) nor for ``aten::scaled_dot_product_attention``; both are added here (matrix
  products only, one per multiply-add, like fvcore's own matmul rule). Element-wise operators
  (additions, activations, normalisation) are not counted, as in fvcore; the table lists
  which operator kinds were left uncounted.
* The class queries are given as a cached (c, d) tensor, so the text encoder's cost is
  excluded: at inference it runs once per class list, not once per image. Its parameters
  are reported in their own column.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import warnings
from math import prod
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from ..config import Config, resolve
from ..model import count_parameters
from ..model.inference import evaluating


def _shape(value) -> list[int]:
    return value.type().sizes()


def _baddbmm_flop(inputs, outputs) -> int:
    """baddbmm(bias, A (b, n, m), B (b, m, p)): b*n*m*p multiply-adds."""
    b, n, m = _shape(inputs[1])
    p = _shape(inputs[2])[-1]
    return b * n * m * p


def _sdpa_flop(inputs, outputs) -> int:
    """softmax(Q K^T) V with Q (..., L, E), K (..., S, E), V (..., S, Ev): two matmuls."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


EXTRA_HANDLES = {"aten::baddbmm": _baddbmm_flop,
                 "aten::scaled_dot_product_attention": _sdpa_flop}


class _ImageOnly(nn.Module):
    """model(images, queries=fixed) -> logits, the per-image computation."""

    def __init__(self, model: nn.Module, queries: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("queries", queries)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, queries=self.queries)["logits"]


def count_flops(model: nn.Module, image_size: int, queries: torch.Tensor
                ) -> tuple[int, list[str], dict[str, int]]:
    """Multiply-adds of one image's forward pass (fvcore, with the extra rules above), the
    operator kinds fvcore left uncounted, and the multiply-adds by submodule name."""
    with warnings.catch_warnings():
        # fvcore's own module scripts a loss with torch.jit, which torch 2.14 deprecates: a
        # warning about fvcore's code, not about anything the reader can change
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script` is deprecated",
                                category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    with evaluating(model):
        x = torch.rand(1, 1, image_size, image_size, device=queries.device)
        fa = FlopCountAnalysis(_ImageOnly(model, queries), x).set_op_handle(**EXTRA_HANDLES)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        with torch.no_grad():
            total = int(fa.total())
        by_module = {k.removeprefix("model."): int(v) for k, v in fa.by_module().items()}
        return total, sorted(fa.unsupported_ops()), by_module


def parameter_counts(model: nn.Module, stage: str) -> dict[str, int]:
    """Parameters by part; ``stage="conquer"`` counts what the Conquer-only model uses."""
    n = count_parameters
    divide = stage == "divide"
    parts = dict(
        params_image_encoder=n(model.image_encoder),
        params_text_encoder=n(model.text_encoder),
        params_query_networks=n(model.qn1) + (n(model.experts) if divide else 0),
        params_gate=(n(model.gate) + n(model.scl_proj)) if divide else 0,
    )
    parts["params_total"] = sum(parts.values())
    return parts


def cost_table(cfg: Config, *, n_queries: int | None = None,
               classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Parameters and FLOPs per image of the Conquer-only model and of UniChest with
    ``cfg.K`` query networks, measured on a freshly built model at ``cfg``'s shapes.

    ``classes`` default: the union label space of ``cfg.sources`` (of ``cfg.data``'s world);
    ``n_queries`` overrides
    the number of class queries (random query vectors of the right width, e.g. 60 for the
    official code's label space).
    """
    from ..data.label_spaces import union_classes
    from ..model import UniChest

    classes = tuple(classes or union_classes(cfg.sources, cfg.data))
    model = UniChest(cfg.replace(channels_last=False), classes)
    c = n_queries or len(classes)
    if c < 1:
        raise ValueError(f"n_queries = {n_queries!r} must be >= 1")
    queries = torch.randn(c, cfg.embed_dim, generator=torch.Generator().manual_seed(0))
    rows = []
    for stage in ("conquer", "divide"):
        if stage == "divide":
            if cfg.K == 1:
                break
            model.start_divide()
        macs, uncounted, by_module = count_flops(model, cfg.image_size, queries)
        qn_macs = by_module.get("qn1", 0) + (by_module.get("experts", 0) if stage == "divide" else 0)
        name = "Conquer only (QN1)" if stage == "conquer" else f"UniChest (K={cfg.K})"
        rows.append(dict(model=name, stage=stage, K=1 if stage == "conquer" else cfg.K,
                         backbone=cfg.backbone, image_size=cfg.image_size,
                         embed_dim=cfg.embed_dim, n_decoder_layers=cfg.n_decoder_layers,
                         n_queries=c, GMACs=macs / 1e9, GFLOPs=2 * macs / 1e9,
                         GMACs_image_encoder=by_module.get("image_encoder", 0) / 1e9,
                         GMACs_query_networks=qn_macs / 1e9,
                         **parameter_counts(model, stage), uncounted_ops=", ".join(uncounted)))
    df = pd.DataFrame(rows)
    df["GFLOPs_increase_pct"] = 100 * (df["GFLOPs"] / df["GFLOPs"].iloc[0] - 1)
    return df


def paper_cost(n_queries: int = 60) -> pd.DataFrame:
    """:func:`cost_table` at the paper's shapes: ResNet-50, 512 px, d = 768, 4 decoder layers,
    4 heads, FFN 1024, K = 4, ``n_queries`` class queries (the official code's 60)."""
    return cost_table(resolve("paper", K=4), n_queries=n_queries)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """A reader's view of :func:`cost_table` rows: one row per (model, shapes), GFLOPs per
    image, the increase over Conquer-only and parameters in millions."""
    out = pd.DataFrame({
        "model": table["model"].str.replace(" (QN1)", "", regex=False),
        "shapes": [f"{b}, {s} px, d={d}" for b, s, d in
                   zip(table["backbone"], table["image_size"], table["embed_dim"])],
        "GFLOPs": table["GFLOPs"].round(2),
        "vs Conquer": [f"{v:+.1f} %" for v in table["GFLOPs_increase_pct"]],
        "query networks (M params)": (table["params_query_networks"] / 1e6).round(2),
        "total (M params)": (table["params_total"] / 1e6).round(2),
    })
    return out.set_index(["shapes", "model"])


__all__ = ["EXTRA_HANDLES", "cost_table", "count_flops", "paper_cost", "parameter_counts",
           "summary"]
