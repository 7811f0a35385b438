"""The query networks Φ_QN of Eq. 2, E of them evaluated as one batched computation.

Each network is pre-norm transformer decoder layers (class queries self-attend, then
cross-attend to the image patches, then a feed-forward block), a final LayerNorm and an MLP
giving one score per query token, so any number of queries works (zero-shot on new class
names). The positional code is added to the *keys* of the cross-attention only (DETR style),
so values stay pure image features. All weights carry a leading network axis E: the K−1
experts run as one batched computation (one matmul per projection), not a loop.

Introduced in ``notebooks/02_conquer.ipynb`` (QN¹) and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StackedLinear(nn.Module):
    """E independent linear maps: weight (E, in, out), bias (E, out)."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n, d_out))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier-uniform weights (each network its own draw), zero biases."""
        d_in, d_out = self.weight.shape[1:]
        bound = math.sqrt(6.0 / (d_in + d_out))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
            self.bias.zero_()

    def extra_repr(self) -> str:
        e, d_in, d_out = self.weight.shape
        return f"networks={e}, in={d_in}, out={d_out}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, L, in) -> (E, B, L, out)."""
        e, b, l, _ = x.shape
        y = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(e, b * l, -1), self.weight)
        return y.view(e, b, l, -1)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """The same input for every network: x (B, L, in) -> (E, B, L, out), one matmul."""
        e, d_in, d_out = self.weight.shape
        b, l, _ = x.shape
        w = self.weight.permute(1, 0, 2).reshape(d_in, e * d_out)
        y = (x.reshape(b * l, d_in) @ w).view(b, l, e, d_out).permute(2, 0, 1, 3)
        return y + self.bias.view(e, 1, 1, d_out)


class StackedLayerNorm(nn.Module):
    """E independent LayerNorms over the last axis of (E, B, L, d)."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, dim))
        self.bias = nn.Parameter(torch.zeros(n, dim))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def extra_repr(self) -> str:
        return f"networks={self.weight.shape[0]}, dim={self.weight.shape[1]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, x.shape[-1:])
        return y * self.weight[:, None, None] + self.bias[:, None, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int, *,
           dropout_p: float = 0.0, need_weights: bool = False):
    """Multi-head scaled dot-product attention on (E, B, L, d) tensors.

    Returns ``(out (E, B, Lq, d), weights (E, B, Lq, Lk) averaged over heads or None)``.
    Without weights it calls ``F.scaled_dot_product_attention``; with weights it writes the
    softmax out explicitly (the same maths).
    """
    e, b, lq, d = q.shape
    lk = k.shape[2]
    dh = d // n_heads

    def heads(t, length):
        return t.reshape(e * b, length, n_heads, dh).transpose(1, 2)

    qh, kh, vh = heads(q, lq), heads(k, lk), heads(v, lk)
    if not need_weights:
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout_p)
        weights = None
    else:
        w = torch.softmax((qh @ kh.transpose(-1, -2)) / math.sqrt(dh), dim=-1)
        out = F.dropout(w, dropout_p, training=dropout_p > 0) @ vh
        weights = w.mean(1).view(e, b, lq, lk)
    return out.transpose(1, 2).reshape(e, b, lq, d), weights


class DecoderLayer(nn.Module):
    """One pre-norm transformer decoder layer for E networks at once: query self-attention,
    cross-attention to the image patches (keys carry the positional code), feed-forward."""

    def __init__(self, n: int, dim: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2, self.norm3 = (StackedLayerNorm(n, dim) for _ in range(3))
        self.self_qkv = StackedLinear(n, dim, 3 * dim)
        self.self_out = StackedLinear(n, dim, dim)
        self.cross_q = StackedLinear(n, dim, dim)
        self.cross_k = StackedLinear(n, dim, dim)
        self.cross_v = StackedLinear(n, dim, dim)
        self.cross_out = StackedLinear(n, dim, dim)
        self.ffn1 = StackedLinear(n, dim, ffn_dim)
        self.ffn2 = StackedLinear(n, ffn_dim, dim)

    def _drop(self, x):
        return F.dropout(x, self.dropout, self.training)

    def forward(self, t, memory, memory_keys, need_weights=False):
        """t (E, B, c, d); memory / memory_keys (B, N, d) -> t, cross-attention or None."""
        p = self.dropout if self.training else 0.0
        q, k, v = self.self_qkv(self.norm1(t)).chunk(3, dim=-1)
        t = t + self._drop(self.self_out(attend(q, k, v, self.n_heads, dropout_p=p)[0]))
        q = self.cross_q(self.norm2(t))
        out, weights = attend(q, self.cross_k.shared(memory_keys), self.cross_v.shared(memory),
                              self.n_heads, dropout_p=p, need_weights=need_weights)
        t = t + self._drop(self.cross_out(out))
        t = t + self._drop(self.ffn2(self._drop(F.gelu(self.ffn1(self.norm3(t))))))
        return t, weights


class QueryNetworks(nn.Module):
    """E query networks Φ_QN (Eq. 2), evaluated together: s^k = Φ_QN^k(I, Φ_text(Y)).

    Each network is ``n_layers`` :class:`DecoderLayer` s, a final LayerNorm and an MLP head
    (d -> d -> 1) giving one score per query token.
    """

    def __init__(self, n: int, dim: int, n_heads: int, ffn_dim: int, n_layers: int,
                 dropout: float):
        super().__init__()
        self.n = n
        self.layers = nn.ModuleList(DecoderLayer(n, dim, n_heads, ffn_dim, dropout)
                                    for _ in range(n_layers))
        self.norm = StackedLayerNorm(n, dim)
        self.head1 = StackedLinear(n, dim, dim)
        self.head2 = StackedLinear(n, dim, 1)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for m in self.modules():
            if isinstance(m, (StackedLinear, StackedLayerNorm)):
                m.reset_parameters(generator)

    def decode(self, queries: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor,
               *, need_weights: bool = False):
        """The decoder without its score head: the normalised query tokens (E, B, c, d) and,
        with ``need_weights``, cross-attention (B, E, c, N) averaged over heads and layers
        (shapes as :meth:`forward`; MedKLIP-style heads read the tokens too)."""
        b = patches.shape[0]
        q = queries.to(patches.dtype)
        t = q.expand(self.n, *q.shape) if q.ndim == 3 else q.expand(self.n, b, *q.shape)
        keys = patches + pos.to(patches.dtype)
        total = None
        for layer in self.layers:
            t, w = layer(t, patches, keys, need_weights)
            if need_weights:
                total = w if total is None else total + w
        attn = None if total is None else (total / len(self.layers)).transpose(0, 1)
        return self.norm(t), attn

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """The score head on :meth:`decode`'s tokens (E, B, c, d): scores (B, E, c)."""
        return self.head2(F.gelu(self.head1(tokens))).squeeze(-1).transpose(0, 1)

    def forward(self, queries: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor,
                *, need_weights: bool = False):
        """queries (c, d) or one set per image (B, c, d), patches (B, N, d), pos (N, d) ->
        scores (B, E, c) and, with ``need_weights``, cross-attention (B, E, c, N) averaged
        over heads and layers."""
        tokens, attn = self.decode(queries, patches, pos, need_weights=need_weights)
        return self.score(tokens), attn


__all__ = ["DecoderLayer", "QueryNetworks", "StackedLayerNorm", "StackedLinear", "attend"]
