"""The UniChest model: QN¹, the K−1 expert query networks, gate Φ1 and projection Φ2 (Eq. 5).

Paper Section III (Eqs. 1, 2, 5). ``UniChest(cfg, classes)`` returns a dict of tensors from
``forward`` (open_clip style) so the losses in :mod:`unichest_lib.training.losses` take what
they need. Its parts: the image encoder (:mod:`.encoders`), the text encoder (:mod:`.text`)
and the query networks (:mod:`.query`).

Design choices (the paper leaves them open; see the spec table in the book's appendix):

* **Shared and expert networks.** QN¹ is its own :class:`~.query.QueryNetworks` with E = 1 so
  that it can train in Conquer alone; the K−1 experts are one ``QueryNetworks`` with E = K−1.
* **Stages.** ``stage == "conquer"``: image encoder, text encoder (projection; backbone per
  ``cfg.freeze_text``), QN¹ and, with ``cfg.bcl_variant == "learnable"``, the logit scale of
  L_BCL train. :meth:`UniChest.start_divide` freezes both encoders (and that scale) for real,
  re-initialises the K−1 experts (paper: randomly initialised) and activates the gate Φ1 and
  projection Φ2.

Introduced in ``notebooks/02_conquer.ipynb`` (Conquer) and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from .encoders import build_encoders, sincos_2d
from . import query_text
from .query import QueryNetworks

#: The stages a model can be in. A run's stage (:data:`unichest_lib.training.keys.STAGES`)
#: adds ``"continued"``, whose model stays in ``"conquer"``.
MODEL_STAGES = ("conquer", "divide")
#: CLIP's learnable temperature of L_BCL (``cfg.bcl_variant == "learnable"``): the logit
#: scale 1/τ is exp of a parameter that starts at log(1/0.07) and is clamped at 100.
BCL_LOGIT_SCALE_INIT = math.log(1 / 0.07)
BCL_MAX_SCALE = 100.0


# ---------------------------------------------------------------------------------------
# Eq. 5
# ---------------------------------------------------------------------------------------
def combine_scores(s1: torch.Tensor, expert_scores: torch.Tensor, gate: torch.Tensor,
                   lam: float, mode: str = "scores", eps: float = 1e-6) -> torch.Tensor:
    """s^All of Eq. 5 from s¹ (B, c), the experts' scores (B, K−1, c) and ω (B, K−1).

    ``mode="scores"`` (paper): λ·s¹ + (1−λ)·Σ_k ω^k s^k on logits.
    ``mode="probabilities"`` (official code): p of :func:`combine_probabilities`, returned as
    its logit log(p/(1−p)) (p clamped to [eps, 1−eps]) so that sigmoid(result) = p and every
    consumer can keep treating ``logits`` as logits. The training loss scores p itself
    (the model returns it as ``out["probs"]``), not this clipped logit.
    """
    if mode == "scores":
        return lam * s1 + (1.0 - lam) * torch.einsum("bk,bkc->bc", gate, expert_scores)
    if mode == "probabilities":
        return torch.logit(combine_probabilities(s1, expert_scores, gate, lam), eps=eps)
    raise ValueError(f"combine mode {mode!r} is not valid; choose 'scores' or 'probabilities'")


def combine_probabilities(s1: torch.Tensor, expert_scores: torch.Tensor, gate: torch.Tensor,
                          lam: float) -> torch.Tensor:
    """Eq. 5 as the official code computes it, on probabilities:
    p = λ·σ(s¹) + (1−λ)·Σ_k ω^k σ(s^k)."""
    return lam * torch.sigmoid(s1) + (1.0 - lam) * torch.einsum(
        "bk,bkc->bc", gate, torch.sigmoid(expert_scores))


# ---------------------------------------------------------------------------------------
# UniChest
# ---------------------------------------------------------------------------------------
class UniChest(nn.Module):
    """UniChest (Eqs. 1, 2, 5): image/text encoders, QN¹, K−1 experts, gate Φ1, projection Φ2.

    ``classes`` is the union label space the model is trained on; ``cfg.query_text`` says
    what their queries say (:mod:`.query_text`: names by default). Build in the Conquer
    stage; call :meth:`start_divide` for the Divide stage.
    """

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__()
        if isinstance(classes, str) or not classes:
            raise ValueError(f"classes must be a non-empty sequence of class names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes contain duplicates: {classes!r}")
        self.cfg = cfg
        self.classes = tuple(classes)
        self._own = query_text.entries(self.classes, cfg.query_text)
        self.stage = "conquer"
        d = cfg.embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_encoder, self.text_encoder = build_encoders(cfg)
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
        # log(1/τ) of L_BCL, learned as in CLIP; absent otherwise (older checkpoints fit)
        self.bcl_logit_scale = (nn.Parameter(torch.tensor(BCL_LOGIT_SCALE_INIT))
                                if cfg.bcl_variant == "learnable" else None)
        self.register_buffer("pos_cache", torch.empty(0), persistent=False)
        self._query_cache: dict[tuple[str, ...], torch.Tensor] = {}

    # ---- stages -----------------------------------------------------------------------
    def start_divide(self, *, reinit_experts: bool = True) -> "UniChest":
        """Enter the Divide stage (Section III-C3): freeze Φ_image and Φ_text for real
        (no gradients, eval mode incl. batch norm, kept by :meth:`train`), re-initialise the
        K−1 experts (paper: random; ``reinit_experts=False`` when about to load a Divide
        checkpoint), and make QN¹, the experts, Φ1 and Φ2 trainable. The learnable logit
        scale of L_BCL is frozen with the encoders (L_BCL is a constant in Divide)."""
        if self.stage == "divide":
            return self
        self.stage = "divide"
        self.image_encoder.requires_grad_(False)
        if self.bcl_logit_scale is not None:
            self.bcl_logit_scale.requires_grad_(False)
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

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the learnable logit scale of L_BCL to at most log(BCL_MAX_SCALE), in place
        (CLIP, after every optimiser step: the bound stays where its gradient is alive)."""
        if self.bcl_logit_scale is not None:
            self.bcl_logit_scale.clamp_(max=math.log(BCL_MAX_SCALE))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the current stage trains (build the optimiser from these)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ---- text side --------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """T = Φ_text(t) for each text: (n, d)."""
        return self.text_encoder(texts)

    def query_entries(self) -> list:
        """The model's own query of each class (``cfg.query_text``): a text, or a tuple of
        phrasings whose embeddings are averaged (:mod:`.query_text`)."""
        return list(self._own)

    def query_groups(self) -> list[list[str]]:
        """The model's own queries as groups of texts, one per class (one group unless
        ``cfg.query_text == "ensemble"``): what training draws from."""
        return query_text.query_groups(self._own)

    def class_queries(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """Φ_text of query texts, the queries of Eq. 2: (c', d); ``None``: the model's own
        (:meth:`query_entries`). Cached once the whole text encoder is frozen (Divide); the
        backbone's features are cached whenever it is."""
        if names is None:
            if not all(isinstance(e, str) for e in self._own):
                return self.mean_queries(self._own)
            names = self._own
        names = tuple(names)
        if not self.text_encoder.frozen:
            return self.encode_text(names)
        if names not in self._query_cache:
            with torch.no_grad():
                self._query_cache[names] = self.encode_text(names)
        q = self._query_cache[names]
        return q.to(self.text_encoder.proj.weight.device)

    def mean_queries(self, items: Sequence) -> torch.Tensor:
        """(c', d) queries of entries that are texts or tuples of texts: a tuple's query is
        the mean of its texts' embeddings (the ensemble of :mod:`.query_text`)."""
        groups = query_text.query_groups(items)
        if len(groups) == 1:
            return self.class_queries(groups[0])
        stacked = torch.stack([self.class_queries(g) for g in groups])  # (V, c', d)
        single = torch.tensor([isinstance(e, str) for e in items], device=stacked.device)
        return torch.where(single[:, None], stacked[0], stacked.mean(0))

    def query_pick(self, stage: str, step: int) -> torch.Tensor | None:
        """The phrasing of each class at training ``step`` of ``stage`` (``"ensemble"``, for
        ``forward(query_pick=...)``); None when the model has one query per class."""
        n = len(self.query_groups())
        if n == 1:
            return None
        pick = query_text.draw(len(self.classes), n, seed=self.cfg.seed, stage=stage, step=step)
        return torch.as_tensor(pick, dtype=torch.long)

    def positions(self, h: int, w: int, device=None) -> torch.Tensor:
        """The 2-D sine-cosine positional code (h·w, d) that the query networks add to the
        keys of their cross-attention (cached per grid size)."""
        device = self.pos_cache.device if device is None else device
        n = h * w
        if self.pos_cache.shape != (n, self.cfg.embed_dim) or self.pos_cache.device != device:
            self.pos_cache = sincos_2d(h, w, self.cfg.embed_dim, device=device)
        return self.pos_cache

    # ---- forward ----------------------------------------------------------------------
    def forward(self, images: torch.Tensor | None, texts: Sequence[str] | None = None, *,
                queries: torch.Tensor | None = None, return_attention: bool = False,
                patches: torch.Tensor | None = None, grid: tuple[int, int] | None = None,
                query_pick: torch.Tensor | None = None) -> dict:
        """See the module docstring and the shared interface: returns patches, image_emb,
        text_emb (with texts; and bcl_logit_scale, the learnable log(1/τ), when there is one),
        scores (B, K_active, c), gate / gate_proj (Divide, K > 1), logits (B, c) and, with
        ``return_attention``, attention (B, K_active, c, h, w).

        In the Divide stage the frozen encoder's output may be passed instead of images:
        ``forward(None, texts, patches=I, grid=(h, w))`` (see :mod:`unichest_lib.training.features`).
        ``query_pick`` (c,) picks each class's phrasing of :meth:`query_groups` (training with
        ``cfg.query_text == "ensemble"``, :meth:`query_pick`) instead of their mean."""
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
            if self.bcl_logit_scale is not None:  # L_BCL reads it (training.losses.bcl_loss)
                out["bcl_logit_scale"] = self.bcl_logit_scale
        if query_pick is not None:
            q = self._picked_queries(query_pick, queries)
        else:
            q = self.class_queries() if queries is None else self._check_queries(queries)
        pos = self.positions(h, w, patches.device)
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
                gate = torch.softmax(self.gate(self.gate_input(patches)).float(), dim=-1)
                out["gate"] = gate
                out["gate_proj"] = self.scl_proj(gate)  # ω̄ = Φ2(ω)
            if self.cfg.combine == "probabilities":  # the loss scores p itself
                out["probs"] = combine_probabilities(logits.float(), s_exp.float(), gate,
                                                     self.cfg.lam)
            logits = combine_scores(logits, s_exp, gate, self.cfg.lam, self.cfg.combine)
            scores = torch.cat([scores, s_exp], dim=1)
            if return_attention:
                attn = torch.cat([attn, a_exp], dim=1)
        out["scores"] = scores
        out["logits"] = logits
        if return_attention:
            out["attention"] = attn.reshape(*attn.shape[:3], h, w)
        return out

    def gate_input(self, patches: torch.Tensor) -> torch.Tensor:
        """What the gate Φ1 reads: Ī, the mean of the patches (paper, ``gate_input="mean"``),
        or the mean of the patches layer-normalised over d (``"layernorm"``, the official
        code). The official LayerNorm's affine parameters are left out: before a mean and a
        linear Φ1 they are a linear map that Φ1 absorbs exactly."""
        if self.cfg.gate_input == "layernorm":
            patches = F.layer_norm(patches.float(), patches.shape[-1:])
        return patches.mean(1)

    def _picked_queries(self, pick: torch.Tensor, queries) -> torch.Tensor:
        groups = self.query_groups()
        if queries is not None or pick.shape != (len(self.classes),) or not (
                0 <= int(pick.min()) and int(pick.max()) < len(groups)):
            raise ValueError(f"query_pick must be ({len(self.classes)},) indices in "
                             f"[0, {len(groups)}) and comes without queries; got "
                             f"{tuple(pick.shape)}")
        stacked = torch.stack([self.class_queries(g) for g in groups])  # (V, c, d)
        return stacked[pick.to(stacked.device), torch.arange(len(self.classes),
                                                             device=stacked.device)]

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


__all__ = ["BCL_LOGIT_SCALE_INIT", "BCL_MAX_SCALE", "MODEL_STAGES", "UniChest",
           "combine_probabilities", "combine_scores", "count_parameters"]
