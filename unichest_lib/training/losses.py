"""The losses of UniChest (paper Section III-C, Eqs. 3-7), each a small vectorised function.

Every function takes tensors and returns a scalar tensor. :func:`conquer_loss` and
:func:`divide_loss` take the model's output dict and a batch and return a dict of named terms
ending in ``_loss`` plus ``"loss"``, their sum (open_clip style), so every term can be logged
and plotted by name:

``bcl_loss``        L_BCL, Eq. 3, its logits scaled as ``cfg.bcl_variant`` says (the
                    paper's τ, the official code's factor, or CLIP's learned scale; in
                    Divide computed from frozen features: reported, no gradient)
``multilabel_loss`` the paper's L_BCE, the multi-label loss on observed classes:
                    ``cfg.multilabel_loss`` selects ASL (the paper's "enhanced" BCE, the
                    default) or plain BCE (logged as ``bce_loss`` before issue #17, which was
                    wrong for ASL; :func:`current_term_names` reads old histories)
``scl_loss``        L_SCL, Eq. 6 (Divide only)

Losses are computed in float32 whatever the autocast dtype of the model output.

Introduced in ``notebooks/02_conquer.ipynb`` (Eqs. 3, 4) and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import Config
from ..model import BCL_MAX_SCALE, combine_scores  # Eq. 5 lives with the model; re-exported

#: The official code's BCL logit scale: log(1/0.07), never exponentiated (spec table).
CODE_BCL_SCALE = math.log(1 / 0.07)
#: The ways of scaling Eq. 3's logits (``cfg.bcl_variant``).
BCL_VARIANTS = ("paper", "code", "learnable")


def bcl_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, tau: float = 1.0,
             variant: str = "paper", logit_scale: torch.Tensor | None = None) -> torch.Tensor:
    """L_BCL, Eq. 3: image-text bidirectional contrastive loss over a batch of M pairs.

    ``image_emb`` Ī (M, d), ``text_emb`` T (M, d); pair i is the positive of row i.
    ``variant="paper"``: L2-normalised features, logits Ī_i·T_m/τ, the image->text and
    text->image cross-entropies **summed**, averaged over i.
    ``variant="code"`` (official code): unnormalised features, logits scaled by log(1/0.07)
    (``tau`` unused), the two directions **averaged**.
    ``variant="learnable"`` (CLIP's temperature): as ``"paper"`` with 1/τ =
    exp(min(``logit_scale``, log 100)), ``logit_scale`` a trained scalar (``tau`` unused).
    """
    img, txt = image_emb.float(), text_emb.float()
    if img.shape != txt.shape or img.ndim != 2:
        raise ValueError(f"image_emb {tuple(img.shape)} and text_emb {tuple(txt.shape)} must "
                         "both have shape (M, d)")
    target = torch.arange(img.shape[0], device=img.device)
    if variant in ("paper", "learnable"):
        cos = F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
        logits = cos / tau if variant == "paper" else learned_scale(logit_scale) * cos
        return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    if variant == "code":
        logits = CODE_BCL_SCALE * img @ txt.T
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    raise ValueError(f"bcl variant {variant!r} is not valid; choose one of {BCL_VARIANTS}")


def learned_scale(logit_scale: torch.Tensor | None) -> torch.Tensor:
    """The logit scale 1/τ = exp(min(s, log 100)) of a learnable log-scale s (CLIP)."""
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
        raise ValueError("bcl variant 'learnable' needs logit_scale, the model's scalar "
                         f"bcl_logit_scale parameter; got {logit_scale!r}")
    return logit_scale.float().reshape(()).clamp(max=math.log(BCL_MAX_SCALE)).exp()


def bcl_chance(variant: str, m: int) -> float:
    """L_BCL when the logits carry no information (all equal): 2 ln M with the directions
    summed (``"paper"``, ``"learnable"``), ln M averaged (``"code"``)."""
    if variant not in BCL_VARIANTS or m < 2:
        raise ValueError(f"need a variant in {BCL_VARIANTS} and M >= 2, got {variant!r}, {m!r}")
    return (1.0 if variant == "code" else 2.0) * math.log(m)


def _reduce(elementwise: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Sum or mean of ``elementwise`` over observed elements; masked ones get zero gradient."""
    if mask is None:
        mask = torch.ones_like(elementwise, dtype=torch.bool)
    if mask.shape != elementwise.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != logits shape {tuple(elementwise.shape)}")
    kept = torch.where(mask.bool(), elementwise, torch.zeros_like(elementwise))
    if reduction == "sum":
        return kept.sum()
    if reduction == "mean":
        return kept.sum() / mask.sum().clamp_min(1)
    raise ValueError(f"reduction {reduction!r} is not valid; choose 'mean' or 'sum'")


def asl_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, *,
             gamma_neg: float = 6.0, gamma_pos: float = 0.0, clip: float = 0.05,
             eps: float = 1e-8, reduction: str = "mean") -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021), the paper's "enhanced" L_BCE.

    Shapes (M, c). With p = σ(x) and the shifted negative probability p_m = max(p − clip, 0):
    positives −(1−p)^γ+ log p, negatives −p_m^γ− log(1 − p_m); logs clamped at ``eps``. The
    focal weights are computed without gradient (as the official code), without touching the
    global grad mode. Only elements where ``mask`` is True count (missing labels are neither
    positive nor negative); ``reduction`` is the mean over observed elements or their sum.
    """
    return _asl(torch.sigmoid(logits.float()), targets, mask, gamma_neg, gamma_pos, clip, eps,
                reduction)


def asl_loss_on_probabilities(probs: torch.Tensor, targets: torch.Tensor,
                              mask: torch.Tensor | None = None, *, gamma_neg: float = 6.0,
                              gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8,
                              reduction: str = "mean") -> torch.Tensor:
    """:func:`asl_loss` taking the probabilities p themselves (the official code's form, for
    Eq. 5 combined on probabilities): no detour through a clipped logit, so a saturated
    negative keeps its gradient and a saturated positive its loss (logs clamped at ``eps``)."""
    return _asl(probs.float(), targets, mask, gamma_neg, gamma_pos, clip, eps, reduction)


def _asl(p, targets, mask, gamma_neg, gamma_pos, clip, eps, reduction) -> torch.Tensor:
    y = targets.float()
    p_neg = 1.0 - p
    if clip > 0:
        p_neg = (p_neg + clip).clamp(max=1.0)  # = 1 - p_m
    loss = y * torch.log(p.clamp(min=eps)) + (1 - y) * torch.log(p_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            pt = p * y + p_neg * (1 - y)
            weight = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * weight
    return _reduce(-loss, mask, reduction)


def masked_bce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, *,
             reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on observed elements only; shapes (M, c)."""
    el = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return _reduce(el, mask, reduction)


def scl_loss(z: torch.Tensor, source: torch.Tensor, tau: float = 1.0,
             variant: str = "paper") -> torch.Tensor:
    """L_SCL, Eq. 6: source contrastive loss on the gate projections ω̄ (M, k), sources (M,).

    Similarities s_ij = cos(ω̄_i, ω̄_j)/τ (L2-normalised, as the official code; bounded).
    ``variant="paper"``: per anchor i, −log[Σ_{j≠i, l_j=l_i} e^{s_ij} / Σ_{m≠i} e^{s_im}],
    averaged over the anchors with at least one same-source partner.
    ``variant="outside"`` (official code, SupCon "outside"): −log[e^{s_ij} / Σ_{m≠i} e^{s_im}]
    averaged over all same-source pairs (i, j≠i).
    With no same-source pair in the batch the loss is 0 (still attached to the graph).
    """
    zf = z.float()
    if zf.ndim != 2 or source.shape != zf.shape[:1]:
        raise ValueError(f"z must be (M, k) and source (M,), got {tuple(z.shape)}, {tuple(source.shape)}")
    m = zf.shape[0]
    zero = zf.sum() * 0.0
    if m < 2:
        return zero
    zn = F.normalize(zf, dim=1)
    sim = zn @ zn.T / tau
    eye = torch.eye(m, dtype=torch.bool, device=zf.device)
    pos = (source[:, None] == source[None, :]) & ~eye
    has_pos = pos.any(dim=1)  # no host sync: empty cases divide 0 by clamp_min(1)
    log_denom = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1)  # (M,)
    if variant == "paper":
        pos_logits = sim.masked_fill(~pos, float("-inf"))
        pos_logits = torch.where(has_pos[:, None], pos_logits, torch.zeros_like(sim))  # no -inf rows
        per_anchor = log_denom - torch.logsumexp(pos_logits, dim=1)
        return torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor)).sum() / has_pos.sum().clamp_min(1)
    if variant == "outside":
        per_pair = log_denom[:, None] - sim
        return torch.where(pos, per_pair, torch.zeros_like(sim)).sum() / pos.sum().clamp_min(1)
    raise ValueError(f"scl variant {variant!r} is not valid; choose 'paper' or 'outside'")


def multilabel_loss(logits: torch.Tensor, batch: dict, cfg: Config,
                    probs: torch.Tensor | None = None) -> torch.Tensor:
    """L_BCE of Eqs. 4/7 as ``cfg`` selects it: ASL (paper) or plain BCE, on observed classes.
    ``probs``, when given (Eq. 5 combined on probabilities), is scored directly instead of
    σ(logits) (:func:`asl_loss_on_probabilities`; BCE clamps its logs at 1e-8)."""
    labels, mask = batch["labels"].to(logits.device), batch["mask"].to(logits.device)
    asl = cfg.multilabel_loss == "asl"
    if probs is not None:  # BCE is ASL without focusing or clip
        return asl_loss_on_probabilities(
            probs, labels, mask, gamma_neg=cfg.asl_gamma_neg if asl else 0.0,
            gamma_pos=cfg.asl_gamma_pos if asl else 0.0, clip=cfg.asl_clip if asl else 0.0,
            reduction=cfg.loss_reduction)
    if asl:
        return asl_loss(logits, labels, mask, gamma_neg=cfg.asl_gamma_neg,
                        gamma_pos=cfg.asl_gamma_pos, clip=cfg.asl_clip,
                        reduction=cfg.loss_reduction)
    return masked_bce_loss(logits, labels, mask, reduction=cfg.loss_reduction)


def _bcl(out: dict, cfg: Config) -> torch.Tensor:
    if "text_emb" not in out:
        raise KeyError("the model output has no 'text_emb': call model(images, texts=batch['text'])")
    return bcl_loss(out["image_emb"], out["text_emb"], cfg.tau_bcl, cfg.bcl_variant,
                    out.get("bcl_logit_scale"))


def conquer_loss(out: dict, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
    """L_Conquer(s¹), Eq. 4 = L_BCL + L_BCE(s¹, Y), with ``out["logits"]`` = s¹."""
    terms = {"bcl_loss": _bcl(out, cfg),
             "multilabel_loss": multilabel_loss(out["logits"], batch, cfg)}
    terms["loss"] = sum(terms.values())
    return terms


def divide_loss(out: dict, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
    """L_Divide, Eq. 7 = L_SCL + L_Conquer(s^All), with ``out["logits"]`` = s^All (Eq. 5);
    with Eq. 5 combined on probabilities, the multi-label term scores ``out["probs"]``.

    L_BCL comes from the frozen encoders, so it is a constant: computed, reported and
    included in ``loss`` but detached. With K = 1, or a uniform gate, there is no learned
    gate and L_SCL is 0. ``cfg.scl_weight`` multiplies L_SCL in ``loss`` (1 in the paper;
    0 is the "no source contrast" control); ``scl_loss`` is reported unweighted.
    """
    bcl = _bcl(out, cfg).detach()
    ml = multilabel_loss(out["logits"], batch, cfg, probs=out.get("probs"))
    if "gate_proj" in out:
        scl = scl_loss(out["gate_proj"], batch["source"].to(out["gate_proj"].device),
                       cfg.tau_scl, cfg.scl_variant)
    else:
        scl = ml.new_zeros(())
    terms = {"bcl_loss": bcl, "multilabel_loss": ml, "scl_loss": scl}
    terms["loss"] = bcl + ml + cfg.scl_weight * scl
    return terms


#: Logged term names of earlier versions -> today's (histories stored in old checkpoints).
RENAMED_TERMS = {"bce_loss": "multilabel_loss"}


def current_term_names(history):
    """A training-history DataFrame with old term names (:data:`RENAMED_TERMS`) renamed."""
    return history.rename(columns=RENAMED_TERMS)


__all__ = ["BCL_VARIANTS", "CODE_BCL_SCALE", "RENAMED_TERMS", "asl_loss",
           "asl_loss_on_probabilities", "bcl_chance", "bcl_loss", "combine_scores",
           "conquer_loss", "current_term_names", "divide_loss", "learned_scale",
           "masked_bce_loss", "multilabel_loss", "scl_loss"]
