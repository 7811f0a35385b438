"""CLIP-style global contrastive pre-training (Radford et al. 2021; the CheXzero recipe, Tiu
et al. 2022), in the library's harness.

* **Dual encoders, no query decoder.** The library's image encoder, its patches mean-pooled
  into one image embedding Ī (Eq. 1's Ī), and its text encoder T; nothing reads labels.
* **One loss** (:func:`clip_loss`): the symmetric InfoNCE of CLIP over the batch's pairs,
  cosine similarities times a learned logit scale exp(s) (s starts at log(1/0.07) and is
  clamped at log 100 after every step, as in CLIP), the two directions **averaged**.
* **Classification by text** (CheXzero's zero-shot): a class c scores
  exp(s)·(cos(Ī, T("c")) − cos(Ī, T("no c"))), a positive against a negative prompt. Since
  cos(Ī, a) − cos(Ī, b) = Ī/|Ī| · (a/|a| − b/|b|), a class's *query* is the difference of its
  two normalised prompt embeddings (:meth:`CLIPStyle.class_queries`), so the evaluation's
  ``forward(images, queries=q)["logits"]`` serves known and unknown classes alike.

It has no class attention, so no grounding. :class:`CLIPStyle` is also the base of the
MGCA-style model (:mod:`.mgca`), which adds its local and prototype terms.

Introduced in ``notebooks/06_baselines.ipynb``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..model.encoders import build_encoders

#: CLIP's initial logit scale, log(1/0.07), and its upper bound, log(100).
LOGIT_SCALE_INIT = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)
#: The negative prompt of a class (CheXzero contrasts "<class>" with "no <class>").
NEGATIVE_PROMPT = "no {}"


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): pair i is the positive of row i; logits exp(s)·cos, the
    image->text and text->image cross-entropies averaged."""
    img, txt = F.normalize(image_emb.float(), dim=-1), F.normalize(text_emb.float(), dim=-1)
    if img.shape != txt.shape or img.ndim != 2:
        raise ValueError(f"image_emb {tuple(img.shape)} and text_emb {tuple(txt.shape)} must "
                         "both have shape (M, d)")
    logits = logit_scale.float().exp() * img @ txt.T
    target = torch.arange(img.shape[0], device=img.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class CLIPStyle(nn.Module):
    """Image and text encoders aligned by :func:`clip_loss`; classes scored by prompts."""

    #: What :func:`conquer_loss` reads of the output, besides the trainer's own keys.
    loss_out_keys = ("logit_scale",)

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__()
        if isinstance(classes, str) or not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct class names, got {classes!r}")
        self.cfg, self.classes, self.stage = cfg, tuple(classes), "conquer"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_encoder, self.text_encoder = build_encoders(cfg)
            self.build_extra()
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def build_extra(self) -> None:
        """Modules a subclass adds (built under the same seed)."""

    # ---- the model interface the harness reads -------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """CLIP: the logit scale stays at most log 100 (after every optimiser step)."""
        self.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    def clear_caches(self) -> None:
        self.text_encoder.clear_cache()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.clear_caches()
        return result

    def query_entries(self) -> list[str]:
        """The model's own class texts: the class names (its prompts)."""
        return list(self.classes)

    def class_queries(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """(c', d) queries of class texts: T(c)/|T(c)| − T("no c")/|T("no c")|."""
        names = list(self.classes if names is None else names)
        pos = F.normalize(self.text_encoder(names).float(), dim=-1)
        neg = F.normalize(self.text_encoder([NEGATIVE_PROMPT.format(n) for n in names]).float(),
                          dim=-1)
        return pos - neg

    def forward(self, images: torch.Tensor, texts: Sequence[str] | None = None, *,
                queries: torch.Tensor | None = None, return_attention: bool = False,
                **ignored) -> dict:
        """``image_emb`` Ī (B, d), ``patches``, ``logits`` (B, c') of the class queries
        (default: the model's classes) and, with ``texts``, ``text_emb`` and ``logit_scale``."""
        if return_attention:
            raise ValueError(f"the {type(self).__name__} baseline has no class attention: it "
                             "cannot ground findings (use a query-decoder model)")
        patches, _ = self.image_encoder(images)
        out = {"patches": patches, "image_emb": patches.mean(1)}
        if texts is not None:
            if len(texts) != patches.shape[0]:
                raise ValueError(f"got {len(texts)} texts for {patches.shape[0]} images")
            out.update(self.encode_texts(list(texts)))
            out["logit_scale"] = self.logit_scale
        q = self.class_queries() if queries is None else queries
        if q.ndim != 2 or q.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"queries must have shape (c', {self.cfg.embed_dim}), got "
                             f"{tuple(q.shape)}; build them with model.class_queries(names)")
        img = F.normalize(out["image_emb"].float(), dim=-1)
        out["logits"] = self.logit_scale.float().exp() * img @ q.float().T
        return out

    def encode_texts(self, texts: list[str]) -> dict:
        """The text side of a training step: ``text_emb`` T (B, d)."""
        return {"text_emb": self.text_encoder(texts)}


def build_model(cfg: Config, classes: Sequence[str]) -> CLIPStyle:
    return CLIPStyle(cfg, classes)


def conquer_loss(out: dict, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
    """CLIP's pre-training loss: the symmetric InfoNCE only (labels are never read)."""
    if "text_emb" not in out:
        raise KeyError("the model output has no 'text_emb': call model(images, texts=batch['text'])")
    loss = clip_loss(out["image_emb"], out["text_emb"], out["logit_scale"])
    return {"clip_loss": loss, "loss": loss}


__all__ = ["CLIPStyle", "LOGIT_SCALE_INIT", "MAX_LOGIT_SCALE", "NEGATIVE_PROMPT", "build_model",
           "clip_loss", "conquer_loss"]
