"""MGCA-style pre-training (Wang et al., NeurIPS 2022): multi-granularity cross-modal
alignment, in the library's harness.

The dual encoders of :class:`.clip.CLIPStyle` (no query decoder, no labels), trained with
MGCA's Eq. 10, ``global`` x L_ITA + ``local`` x L_CTA + ``proto`` x L_CPA
(``cfg.method_options``; the paper's weights are all 1):

* **ITA, instance-wise** (Eqs. 2-3): the symmetric InfoNCE of the pooled image and text
  embeddings at a fixed temperature τ1 = 0.1 (:func:`.clip.clip_loss` with scale 1/τ1).
* **CTA, token-wise** (Eqs. 4-6): each visual token (an image patch) attends to the report's
  tokens through one cross-attention (Q, K, V, O of Eq. 4), giving its cross-modal text
  embedding o; L_LIA contrasts each patch with its own o against the o of the other patches
  of the same image, both ways, at τ2 = 0.07 (Eq. 5); L_LTA does the same from the text
  tokens to the patches; L_CTA is their mean. MGCA weighs each visual token by its ViT
  attention to [CLS]; a ResNet has no [CLS], so every token weighs the same here.
* **CPA, prototype-wise** (Eqs. 7-9): ``prototypes`` learned prototypes; the Sinkhorn-Knopp
  soft codes q of each modality's embedding (:func:`sinkhorn`, no gradient; Cuturi 2013,
  as SwAV does, Caron et al. 2020) are the targets of the *other* modality's softmax over
  prototype similarities at τ3 = 0.2 (swapped prediction).

Classes are scored as by :class:`.clip.CLIPStyle` (a positive against a negative prompt), at
the fixed scale 1/τ1. Introduced in ``notebooks/06_baselines.ipynb``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, method_option_values
from .clip import CLIPStyle, clip_loss

#: MGCA's temperatures (Sec. 4, implementation details) and the Sinkhorn settings: SwAV's ε,
#: but 20 iterations instead of SwAV's 3. At batch 32 with 32 prototypes, 3 iterations left a
#: prototype's mass up to 55 % away from B/K (cosine scores, 3 random draws); 20 bring it
#: within 4 % (``tests/test_baselines_dual.py``). The iterations cost microseconds.
TAU_ITA, TAU_CTA, TAU_CPA = 0.1, 0.07, 0.2
SINKHORN_EPS, SINKHORN_ITERS = 0.05, 20


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = SINKHORN_EPS,
             iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """Soft cluster codes Q (B, K) of similarity ``scores`` (B, K): exp(scores/eps) scaled
    alternately so that every prototype receives B/K of the mass and every sample 1
    (equipartition, the Sinkhorn-Knopp iteration). No gradient: the codes are targets."""
    q = torch.exp((scores.float() - scores.float().max()) / eps).T  # (K, B), stable
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / k  # each prototype: 1/K of the mass
        q = q / q.sum(dim=0, keepdim=True) / b  # each sample: 1/B of the mass
    return (q * b).T  # rows sum to 1


def token_alignment(own: torch.Tensor, cross: torch.Tensor, mask: torch.Tensor | None = None,
                    tau: float = TAU_CTA) -> torch.Tensor:
    """One side of L_CTA (Eq. 5): for each sample and each of its tokens j, InfoNCE between
    token j (``own`` (B, S, d)) and its cross-modal embedding (``cross`` (B, S, d)) against the
    cross-modal embeddings of the sample's other tokens, and the reverse; averaged over the
    real tokens (``mask`` (B, S), default all) and halved as Eq. 5 writes it (1/2NS)."""
    a, o = F.normalize(own.float(), dim=-1), F.normalize(cross.float(), dim=-1)
    logits = a @ o.transpose(1, 2) / tau  # (B, S, S): [i, j, k] = sim(a_j, o_k)
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    keep = mask[:, None, :]  # only real tokens are candidates
    neg = torch.finfo(logits.dtype).min
    to_cross = logits.masked_fill(~keep, neg).log_softmax(-1).diagonal(dim1=1, dim2=2)
    to_own = logits.transpose(1, 2).masked_fill(~keep, neg).log_softmax(-1).diagonal(
        dim1=1, dim2=2)
    per_token = torch.where(mask, -(to_cross + to_own) / 2, 0.0)  # (B, S); padding: 0
    return per_token.sum() / mask.sum().clamp(min=1)


def prototype_alignment(image_emb: torch.Tensor, text_emb: torch.Tensor,
                        prototypes: torch.Tensor, tau: float = TAU_CPA) -> torch.Tensor:
    """L_CPA (Eqs. 7-9): each modality's softmax over cosine similarities to the prototypes
    (at ``tau``) predicts the other modality's Sinkhorn codes; cross-entropies averaged."""
    c = F.normalize(prototypes.float(), dim=-1)
    sv = F.normalize(image_emb.float(), dim=-1) @ c.T  # (B, K)
    st = F.normalize(text_emb.float(), dim=-1) @ c.T
    qv, qt = sinkhorn(sv), sinkhorn(st)
    lv, lt = (sv / tau).log_softmax(-1), (st / tau).log_softmax(-1)
    return -0.5 * ((qt * lv).sum(-1) + (qv * lt).sum(-1)).mean()


class MGCAStyle(CLIPStyle):
    """:class:`.clip.CLIPStyle` with MGCA's token cross-attention and prototypes."""

    loss_out_keys = ("logit_scale", "cta", "prototypes")

    def build_extra(self) -> None:
        d = self.cfg.embed_dim
        n = int(method_option_values(self.cfg)["prototypes"])
        if n < 2:
            raise ValueError(f"method_options prototypes = {n} must be >= 2 (clusters to align)")
        self.patch_to_text = nn.MultiheadAttention(d, 1, batch_first=True)  # Eq. 4, LIA side
        self.text_to_patch = nn.MultiheadAttention(d, 1, batch_first=True)  # LTA side
        self.prototypes = nn.Parameter(F.normalize(torch.randn(n, d), dim=-1))

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        with torch.no_grad():  # ITA's fixed temperature τ1 (MGCA does not learn it)
            self.logit_scale.fill_(math.log(1 / TAU_ITA))
        self.logit_scale.requires_grad_(False)

    def encode_texts(self, texts: list[str]) -> dict:
        """T (B, d) and the report tokens (B, L, d) with their mask, for CTA."""
        tokens, mask = self.text_encoder.token_features(texts, drop_special=True)
        return {"text_emb": self.text_encoder(texts), "text_tokens": tokens,
                "text_mask": mask}

    def forward(self, images, texts=None, *, queries=None, return_attention=False, **ignored):
        out = super().forward(images, texts, queries=queries, return_attention=return_attention)
        if texts is not None:  # the token-wise terms need both sides: compute them here
            r, z, m = out.pop("patches"), out.pop("text_tokens"), out.pop("text_mask")
            o, _ = self.patch_to_text(r, z, z, key_padding_mask=~m, need_weights=False)
            o_hat, _ = self.text_to_patch(z, r, r, need_weights=False)
            out["cta"] = 0.5 * (token_alignment(r, o) + token_alignment(z, o_hat, m))
            out["prototypes"] = self.prototypes
        return out


def build_model(cfg: Config, classes: Sequence[str]) -> MGCAStyle:
    return MGCAStyle(cfg, classes)


def conquer_loss(out: dict, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
    """MGCA's Eq. 10 with the ``global``, ``local`` and ``proto`` weights of
    ``cfg.method_options`` (labels are never read)."""
    if "text_emb" not in out:
        raise KeyError("the model output has no 'text_emb': call model(images, texts=batch['text'])")
    w = method_option_values(cfg)
    terms = {"ita_loss": clip_loss(out["image_emb"], out["text_emb"], out["logit_scale"]),
             "cta_loss": out["cta"].float(),
             "cpa_loss": prototype_alignment(out["image_emb"], out["text_emb"],
                                             out["prototypes"])}
    terms["loss"] = (w["global"] * terms["ita_loss"] + w["local"] * terms["cta_loss"]
                     + w["proto"] * terms["cpa_loss"])
    return terms


__all__ = ["MGCAStyle", "SINKHORN_EPS", "SINKHORN_ITERS", "TAU_CPA", "TAU_CTA", "TAU_ITA",
           "build_model", "conquer_loss", "prototype_alignment", "sinkhorn", "token_alignment"]
