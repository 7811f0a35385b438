"""The UniChest model: image encoder, MoE query networks, gate Φ1 and projection Φ2.

Paper Section III (Eqs. 1, 2, 5). ``UniChest(cfg, classes)`` returns a dict of tensors from
``forward`` (open_clip style) so the losses in :mod:`unichest_lib.losses` take what they need.

Design choices (the paper leaves them open; see the spec table in the book's appendix):

* **Image encoder.** A torchvision ResNet up to ``layer4``; a 1x1 convolution projects the
  feature map to d. The single grey channel is repeated to three and ImageNet-normalised
  inside the module, so callers pass images in 0..1.
* **Query network.** Pre-norm transformer decoder layers: class queries self-attend, then
  cross-attend to the patches, then a feed-forward block; a final LayerNorm and a per-network
  MLP give one score per query token, so any number of queries works (zero-shot on new class
  names). Positional encoding: a fixed 2-D sine-cosine code added to the *keys* of the
  cross-attention only (DETR style), so values stay pure image features.
* **Batched experts.** All weights of a :class:`QueryNetworks` carry a leading network axis
  E; the K−1 experts run as one batched computation (one matmul per projection), not a loop.
  QN¹ is its own ``QueryNetworks`` with E = 1 so that it can train in Conquer alone.
* **Stages.** ``stage == "conquer"``: image encoder, text encoder (projection; backbone per
  ``cfg.freeze_text``) and QN¹ train. :meth:`UniChest.start_divide` freezes both encoders for
  real, re-initialises the K−1 experts (paper: randomly initialised) and activates the gate
  Φ1 and projection Φ2.

Introduced in ``notebooks/02_conquer.ipynb`` (Conquer) and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .text import TextEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = ("conquer", "divide")


# ---------------------------------------------------------------------------------------
# Image encoder Φ_image (Eq. 1)
# ---------------------------------------------------------------------------------------
def _resnet_body(backbone: str, pretrained: bool) -> tuple[nn.Sequential, int]:
    import torchvision

    builder = getattr(torchvision.models, backbone)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(backbone).DEFAULT
    try:
        net = builder(weights=weights)
    except Exception as err:  # download refused offline, corrupt cache, ...
        raise RuntimeError(
            f"pretrained_backbone=True but the ImageNet weights of {backbone!r} could not be "
            f"loaded ({err}). Put them in torch's cache ($TORCH_HOME/hub/checkpoints) or set "
            "pretrained_backbone=False"
        ) from err
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    return body, net.fc.in_features


class ImageEncoder(nn.Module):
    """Φ_image: (B, 1, H, W) in 0..1 -> patches I (B, h*w, d) and the grid (h, w) (Eq. 1)."""

    def __init__(self, backbone: str, embed_dim: int, *, pretrained: bool = False,
                 channels_last: bool = False):
        super().__init__()
        self.body, width = _resnet_body(backbone, pretrained)
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (B, 1, H, W), got {tuple(images.shape)}")
        x = (images.expand(-1, 3, -1, -1) - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self.proj(self.body(x))  # (B, d, h, w)
        h, w = fmap.shape[-2:]
        return fmap.flatten(2).transpose(1, 2).contiguous(), (h, w)


def sincos_2d(h: int, w: int, dim: int, *, device=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine positional code, (h*w, dim): a quarter of the channels each for
    sin/cos of the row and of the column, at geometric frequencies (as in ViT/MAE)."""
    if dim % 4:
        raise ValueError(f"embed_dim = {dim} must be divisible by 4 for the 2-D positional code")
    q = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    y = ys.reshape(-1, 1) * freq
    x = xs.reshape(-1, 1) * freq
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


# ---------------------------------------------------------------------------------------
# Stacked building blocks: E independent copies evaluated as one batched computation
# ---------------------------------------------------------------------------------------
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

    def forward(self, queries: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor,
                *, need_weights: bool = False):
        """queries (c, d), patches (B, N, d), pos (N, d) ->
        scores (B, E, c) and, with ``need_weights``, cross-attention (B, E, c, N) averaged
        over heads and layers."""
        b = patches.shape[0]
        t = queries.to(patches.dtype).expand(self.n, b, *queries.shape)
        keys = patches + pos.to(patches.dtype)
        total = None
        for layer in self.layers:
            t, w = layer(t, patches, keys, need_weights)
            if need_weights:
                total = w if total is None else total + w
        s = self.head2(F.gelu(self.head1(self.norm(t)))).squeeze(-1)  # (E, B, c)
        attn = None if total is None else (total / len(self.layers)).transpose(0, 1)
        return s.transpose(0, 1), attn


# ---------------------------------------------------------------------------------------
# Eq. 5
# ---------------------------------------------------------------------------------------
def combine_scores(s1: torch.Tensor, expert_scores: torch.Tensor, gate: torch.Tensor,
                   lam: float, mode: str = "scores", eps: float = 1e-6) -> torch.Tensor:
    """s^All of Eq. 5 from s¹ (B, c), the experts' scores (B, K−1, c) and ω (B, K−1).

    ``mode="scores"`` (paper): λ·s¹ + (1−λ)·Σ_k ω^k s^k on logits.
    ``mode="probabilities"`` (official code): p = λ·σ(s¹) + (1−λ)·Σ_k ω^k σ(s^k), returned as
    its logit log(p/(1−p)) (p clamped to [eps, 1−eps]) so that sigmoid(result) = p and every
    consumer can keep treating ``logits`` as logits.
    """
    if mode == "scores":
        return lam * s1 + (1.0 - lam) * torch.einsum("bk,bkc->bc", gate, expert_scores)
    if mode == "probabilities":
        p = lam * torch.sigmoid(s1) + (1.0 - lam) * torch.einsum(
            "bk,bkc->bc", gate, torch.sigmoid(expert_scores))
        return torch.logit(p, eps=eps)
    raise ValueError(f"combine mode {mode!r} is not valid; choose 'scores' or 'probabilities'")


# ---------------------------------------------------------------------------------------
# UniChest
# ---------------------------------------------------------------------------------------
class UniChest(nn.Module):
    """UniChest (Eqs. 1, 2, 5): image/text encoders, QN¹, K−1 experts, gate Φ1, projection Φ2.

    ``classes`` is the union label space the model is trained on; their names are the
    queries. Build in the Conquer stage; call :meth:`start_divide` for the Divide stage.
    """

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__()
        if isinstance(classes, str) or not classes:
            raise ValueError(f"classes must be a non-empty sequence of class names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes contain duplicates: {classes!r}")
        self.cfg = cfg
        self.classes = tuple(classes)
        self.stage = "conquer"
        d = cfg.embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_encoder = ImageEncoder(cfg.backbone, d, pretrained=cfg.pretrained_backbone,
                                              channels_last=cfg.channels_last)
            self.text_encoder = TextEncoder(cfg.text_model, d, freeze_backbone=cfg.freeze_text)
            qn = dict(dim=d, n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                      n_layers=cfg.n_decoder_layers, dropout=cfg.dropout)
            self.qn1 = QueryNetworks(1, **qn)
            self.experts = QueryNetworks(cfg.K - 1, **qn) if cfg.K > 1 else None
            self.gate = nn.Linear(d, cfg.K - 1) if cfg.K > 1 else None  # Φ1
            self.scl_proj = nn.Linear(cfg.K - 1, cfg.scl_dim) if cfg.K > 1 else None  # Φ2
        gen = torch.Generator().manual_seed(cfg.seed)
        self.qn1.reset_parameters(gen)
        for m in (self.experts, self.gate, self.scl_proj):
            if m is not None:
                if isinstance(m, QueryNetworks):
                    m.reset_parameters(gen)
                m.requires_grad_(False)  # inactive until start_divide()
        self.register_buffer("pos_cache", torch.empty(0), persistent=False)
        self._query_cache: dict[tuple[str, ...], torch.Tensor] = {}

    # ---- stages -----------------------------------------------------------------------
    def start_divide(self, *, reinit_experts: bool = True) -> "UniChest":
        """Enter the Divide stage (Section III-C3): freeze Φ_image and Φ_text for real
        (no gradients, eval mode incl. batch norm, kept by :meth:`train`), re-initialise the
        K−1 experts (paper: random; ``reinit_experts=False`` when about to load a Divide
        checkpoint), and make QN¹, the experts, Φ1 and Φ2 trainable."""
        if self.stage == "divide":
            return self
        self.stage = "divide"
        self.image_encoder.requires_grad_(False)
        self.image_encoder.eval()
        self.text_encoder.freeze()
        self._query_cache.clear()
        if self.experts is not None:
            if reinit_experts:
                gen = torch.Generator().manual_seed(self.cfg.seed + 1)
                self.experts.reset_parameters(gen)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.cfg.seed + 1)
                    self.gate.reset_parameters()
                    self.scl_proj.reset_parameters()
            for m in (self.experts, self.gate, self.scl_proj):
                m.requires_grad_(True)
        self.qn1.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> "UniChest":
        super().train(mode)
        if self.stage == "divide":
            self.image_encoder.eval()
            self.text_encoder.eval()
        return self

    def clear_caches(self) -> None:
        """Forget cached text embeddings (done on every ``load_state_dict``)."""
        self._query_cache.clear()
        self.text_encoder.clear_cache()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.clear_caches()
        return result

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the current stage trains (build the optimiser from these)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ---- text side --------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """T = Φ_text(t) for each text: (n, d)."""
        return self.text_encoder(texts)

    def class_queries(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """Φ_text of class names, the queries of Eq. 2: (c', d). Cached once the whole text
        encoder is frozen (Divide); the backbone's features are cached whenever it is."""
        names = tuple(self.classes if names is None else names)
        if not self.text_encoder.frozen:
            return self.encode_text(names)
        if names not in self._query_cache:
            with torch.no_grad():
                self._query_cache[names] = self.encode_text(names)
        q = self._query_cache[names]
        return q.to(self.text_encoder.proj.weight.device)

    def _positions(self, h: int, w: int, device) -> torch.Tensor:
        n = h * w
        if self.pos_cache.shape != (n, self.cfg.embed_dim) or self.pos_cache.device != device:
            self.pos_cache = sincos_2d(h, w, self.cfg.embed_dim, device=device)
        return self.pos_cache

    # ---- forward ----------------------------------------------------------------------
    def forward(self, images: torch.Tensor | None, texts: Sequence[str] | None = None, *,
                queries: torch.Tensor | None = None, return_attention: bool = False,
                patches: torch.Tensor | None = None, grid: tuple[int, int] | None = None
                ) -> dict:
        """See the module docstring and the shared interface: returns patches, image_emb,
        text_emb (with texts), scores (B, K_active, c), gate / gate_proj (Divide, K > 1),
        logits (B, c) and, with ``return_attention``, attention (B, K_active, c, h, w).

        In the Divide stage the frozen encoder's output may be passed instead of images:
        ``forward(None, texts, patches=I, grid=(h, w))`` (see :mod:`unichest_lib.features`)."""
        frozen = self.stage == "divide"
        no_grad = torch.no_grad() if frozen else contextlib.nullcontext()
        if patches is None:
            with no_grad:
                patches, (h, w) = self.image_encoder(images)
        elif not frozen or images is not None or grid is None:
            raise ValueError("precomputed patches replace the images only in the Divide stage "
                             "(frozen encoder): call forward(None, texts, patches=I, grid=(h, w))")
        else:
            (h, w) = grid
        out = {"patches": patches, "image_emb": patches.mean(1)}
        if texts is not None:
            if len(texts) != patches.shape[0]:
                raise ValueError(f"got {len(texts)} texts for {patches.shape[0]} images")
            with no_grad:
                out["text_emb"] = self.encode_text(texts)
        q = self.class_queries() if queries is None else self._check_queries(queries)
        pos = self._positions(h, w, patches.device)
        scores, attn = self.qn1(q, patches, pos, need_weights=return_attention)
        logits = scores[:, 0]
        if frozen and self.experts is not None:
            s_exp, a_exp = self.experts(q, patches, pos, need_weights=return_attention)
            if self.cfg.gate == "uniform":  # "equal weights": every expert 1/(K-1), no Φ1
                gate = s_exp.new_full((s_exp.shape[0], s_exp.shape[1]), 1.0 / s_exp.shape[1],
                                      dtype=torch.float32)
                out["gate"] = gate
            else:
                # ω = softmax(Φ1(Ī)), in float32 under autocast so that ω sums to 1 (Eq. 5)
                gate = torch.softmax(self.gate(out["image_emb"]).float(), dim=-1)
                out["gate"] = gate
                out["gate_proj"] = self.scl_proj(gate)  # ω̄ = Φ2(ω)
            logits = combine_scores(logits, s_exp, gate, self.cfg.lam, self.cfg.combine)
            scores = torch.cat([scores, s_exp], dim=1)
            if return_attention:
                attn = torch.cat([attn, a_exp], dim=1)
        out["scores"] = scores
        out["logits"] = logits
        if return_attention:
            out["attention"] = attn.reshape(*attn.shape[:3], h, w)
        return out

    def _check_queries(self, queries: torch.Tensor) -> torch.Tensor:
        if queries.ndim != 2 or queries.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"queries must have shape (c', {self.cfg.embed_dim}), "
                             f"got {tuple(queries.shape)}; build them with model.class_queries(names)")
        return queries

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, class_names: Sequence[str] | None = None):
        """(B, c') probabilities σ(logits) for the model's classes or any other class names
        (zero-shot: the names become the queries). Does not change train/eval mode."""
        queries = None if class_names is None else self.class_queries(class_names)
        return torch.sigmoid(self.forward(images, queries=queries)["logits"].float())


def count_parameters(module: nn.Module | None) -> int:
    """Number of scalar parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


__all__ = ["ImageEncoder", "QueryNetworks", "STAGES", "UniChest", "combine_scores",
           "count_parameters", "sincos_2d"]
