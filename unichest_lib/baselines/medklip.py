"""MedKLIP-style pre-training (Wu et al., ICCV 2023), in the library's harness.

What it keeps of MedKLIP, on the library's image and text encoders and query decoder:

* **Entity queries from descriptions** (Sec. 3.2, Eq. 4): the query of each class is the text
  embedding of its visual description (:data:`unichest_lib.data.descriptions.DESCRIPTIONS`),
  always: ``cfg.query_text`` is not read, and the model's own ``cfg`` records
  ``query_text="description"`` so that the evaluation queries known classes as trained
  (``"ensemble"`` is refused: MedKLIP has one description per entity).
* **One fusion decoder** (Sec. 3.2, Eq. 6): a :class:`~unichest_lib.model.query.QueryNetworks`
  with E = 1, of UniChest's QN¹ sizes; the entity queries attend to the image patches. Its
  score head is the **existence head** ŝ (``logits``); a linear **position head** maps each
  entity's decoder output to p̂. The cross-attention, averaged over layers, is the grounding
  map (``return_attention=True`` -> ``attention`` (B, 1, c, h, w)).
* **Two losses** (Sec. 3.3, Eqs. 7-8), :func:`conquer_loss`: BCE on existence over the
  classes each sample observes (``batch["mask"]``; MedKLIP ignores entities a report does not
  mention), plus ``position`` x the position contrast: for each entity that exists and has a
  known position (``batch["positions"]``, :mod:`unichest_lib.data.positions`), softmax cross
  entropy of inner products ⟨p̂, p⟩ (unnormalised, as the paper says) between the true
  position and ``negatives`` other positions drawn at random (MedKLIP: 7). **No global
  image-text contrastive loss.** Sources without positions (label-only sources, or a report
  sentence without a location) just have the position term masked ("MedKLIP-multi").

Departures: Eq. 7 is written as minus a softmax probability; we minimise its negative log
(the usual InfoNCE form). The position set is the filter's 47 side/zone positions
(:data:`~unichest_lib.data.positions.POSITIONS`), not MedKLIP's 51 RadGraph positions, and a
position is embedded as "it is located at <position>" (Eq. 5) by the same text encoder.

Negative positions are drawn **reproducibly**: each training forward with texts draws a
uniform noise (B, c, P) from a generator seeded by ``cfg.seed`` and the model's step counter
(the buffer ``position_step``, saved with the checkpoint, so a resumed run draws the same);
the negatives of an entity are the ``negatives`` positions of smallest noise other than its
true one (a uniform draw without replacement, vectorised, :func:`sample_negatives`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, method_option_values
from ..data.positions import POSITIONS, position_text
from ..model import query_text
from ..model.encoders import build_encoders, sincos_2d
from ..model.query import QueryNetworks


# ---------------------------------------------------------------------------------------
# losses (Sec. 3.3): pure functions
# ---------------------------------------------------------------------------------------
def existence_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_cls: binary cross-entropy of the existence logits (B, c) against ``labels``, averaged
    over the observed entries (``mask``); 0 when none is observed."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    m = mask.to(bce.dtype)
    return (bce * m).sum() / m.sum().clamp(min=1.0)


def sample_negatives(noise: torch.Tensor, positions: torch.Tensor, n: int) -> torch.Tensor:
    """(B, c, n') negative position indices, n' = min(n, P - 1): per entry, the positions of
    smallest ``noise`` (B, c, P) other than the true one ``positions`` (B, c) (-1 = none: any
    n' positions). With uniform noise this is MedKLIP's random index sampling I(k, u), without
    replacement and never the true position."""
    p = noise.shape[-1]
    n = max(0, min(int(n), p - 1))
    true = positions.clamp(min=0).unsqueeze(-1)
    masked = noise.float().scatter(-1, true, float("inf"))
    return masked.topk(n, dim=-1, largest=False).indices


def position_loss(position_logits: torch.Tensor, positions: torch.Tensor, noise: torch.Tensor,
                  n_negatives: int) -> torch.Tensor:
    """L_loc (Eq. 7, as a negative log-likelihood): ``position_logits`` (B, c, P) are ⟨p̂, p⟩
    for every entity and position; each entity with a known position (``positions`` >= 0)
    scores its true position against :func:`sample_negatives` of ``noise``, by softmax cross
    entropy; the mean over those entities, 0 (not NaN) when there is none."""
    valid = positions >= 0
    true = positions.clamp(min=0).unsqueeze(-1)
    cand = torch.cat([true, sample_negatives(noise, positions, n_negatives)], dim=-1)
    logits = position_logits.float().gather(-1, cand)  # (B, c, 1 + n')
    ce = torch.logsumexp(logits, dim=-1) - logits[..., 0]
    v = valid.to(ce.dtype)
    return (ce * v).sum() / v.sum().clamp(min=1.0)


def conquer_loss(out: dict, batch: dict, cfg: Config) -> dict:
    """Eq. 8: ``existence_loss`` + ``position`` x ``position_loss`` (options of ``medklip`` in
    :data:`~unichest_lib.config.METHOD_OPTIONS`). The position term is 0 for an output without
    ``position_logits`` (a forward without texts)."""
    opts = method_option_values(cfg)
    ex = existence_loss(out["logits"], batch["labels"], batch["mask"])
    if "position_logits" in out:
        pos = position_loss(out["position_logits"], batch["positions"].to(ex.device),
                            out["position_noise"], int(opts["negatives"]))
    else:
        pos = ex.new_zeros(())
    return {"existence_loss": ex, "position_loss": pos, "loss": ex + opts["position"] * pos}


# ---------------------------------------------------------------------------------------
# the model (Sec. 3.2)
# ---------------------------------------------------------------------------------------
def decode(qn: QueryNetworks, queries: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor,
           need_weights: bool = False):
    """``qn``'s forward pass that also returns the decoder output: scores (B, E, c),
    cross-attention (B, E, c, N) or None, and the normalised tokens (B, E, c, d) that feed
    the score head (MedKLIP's two heads read the same fusion output)."""
    tokens, attn = qn.decode(queries, patches, pos, need_weights=need_weights)
    return qn.score(tokens), attn, tokens.transpose(0, 1)


class MedKLIP(nn.Module):
    """MedKLIP-style model: description queries, one fusion decoder, existence and position
    heads (see the module docstring). Build with :func:`build_model`."""

    loss_out_keys = ("position_logits", "position_noise")
    loss_batch_keys = ("positions",)

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__()
        if isinstance(classes, str) or not classes:
            raise ValueError(f"classes must be a non-empty sequence of class names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes contain duplicates: {classes!r}")
        if cfg.query_text == "ensemble":
            raise ConfigError("method 'medklip' queries every class by its description; "
                              "query_text = 'ensemble' does not apply (give 'description')")
        opts = method_option_values(cfg)
        if not float(opts["negatives"]).is_integer():
            raise ConfigError(f"method option negatives = {opts['negatives']!r} must be an integer")
        self.n_negatives = int(opts["negatives"])
        self.cfg = cfg.replace(query_text="description")  # what the evaluation reads
        self.classes = tuple(classes)
        self._own = query_text.entries(self.classes, "description")
        self.position_texts = tuple(position_text(p) for p in POSITIONS)
        self.stage = "conquer"
        d = cfg.embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_encoder, self.text_encoder = build_encoders(cfg)
            self.decoder = QueryNetworks(1, dim=d, n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                                         n_layers=cfg.n_decoder_layers, dropout=cfg.dropout)
            self.position_head = nn.Linear(d, d)
        self.decoder.reset_parameters(torch.Generator().manual_seed(cfg.seed))
        self.register_buffer("position_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("pos_cache", torch.empty(0), persistent=False)
        self._query_cache: dict[tuple[str, ...], torch.Tensor] = {}

    # ---- the model contract -------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def clamp_logit_scale_(self) -> None:
        """No learnable temperature: nothing to clamp."""

    def clear_caches(self) -> None:
        self._query_cache.clear()
        self.text_encoder.clear_cache()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.clear_caches()
        return result

    def query_entries(self) -> list:
        """The description of each class (the model's own queries)."""
        return list(self._own)

    def query_groups(self) -> list[list[str]]:
        return [list(self._own)]

    def class_queries(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """Φ_text of query texts (c', d); ``None``: the classes' descriptions. Cached while
        the whole text encoder is frozen."""
        names = tuple(self._own if names is None else names)
        if not self.text_encoder.frozen:
            return self.text_encoder(names)
        if names not in self._query_cache:
            with torch.no_grad():
                self._query_cache[names] = self.text_encoder(names)
        return self._query_cache[names].to(self.text_encoder.proj.weight.device)

    def mean_queries(self, items: Sequence) -> torch.Tensor:
        """Queries of entries that are texts or tuples of texts (mean embedding of a tuple)."""
        groups = query_text.query_groups(items)
        stacked = torch.stack([self.class_queries(g) for g in groups])
        single = torch.tensor([isinstance(e, str) for e in items], device=stacked.device)
        return torch.where(single[:, None], stacked[0], stacked.mean(0))

    def position_embeddings(self) -> torch.Tensor:
        """(P, d): the position set P of Eq. 5, one embedding per :data:`POSITIONS` entry."""
        return self.class_queries(self.position_texts)

    def _grid_code(self, h: int, w: int, device) -> torch.Tensor:
        if self.pos_cache.shape != (h * w, self.cfg.embed_dim) or self.pos_cache.device != device:
            self.pos_cache = sincos_2d(h, w, self.cfg.embed_dim, device=device)
        return self.pos_cache

    def _noise(self, b: int, c: int, device) -> torch.Tensor:
        """Uniform (b, c, P) noise for the negative positions of this step, seeded by
        ``cfg.seed`` and ``position_step`` (advanced once per training forward)."""
        step = int(self.position_step)
        gen = torch.Generator().manual_seed((int(self.cfg.seed) << 32) + step)
        noise = torch.rand(b, c, len(POSITIONS), generator=gen)
        if self.training:
            self.position_step += 1
        return noise.to(device)

    def forward(self, images: torch.Tensor, texts: Sequence[str] | None = None, *,
                queries: torch.Tensor | None = None, return_attention: bool = False,
                **ignored) -> dict:
        """patches, image_emb (patch mean), scores (B, 1, c), logits (B, c) = existence ŝ;
        with ``texts`` (a training step) position_logits (B, c, P) = ⟨p̂, p⟩ and the
        position_noise of the step; with ``return_attention`` attention (B, 1, c, h, w)."""
        patches, (h, w) = self.image_encoder(images)
        out = {"patches": patches, "image_emb": patches.mean(1)}
        if queries is None:
            q = self.class_queries()
        elif queries.ndim != 2 or queries.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"queries must have shape (c', {self.cfg.embed_dim}), got "
                             f"{tuple(queries.shape)}; build them with model.class_queries(names)")
        else:
            q = queries
        grid = self._grid_code(h, w, patches.device)
        scores, attn, tokens = decode(self.decoder, q, patches, grid, return_attention)
        out["scores"], out["logits"] = scores, scores[:, 0]
        if texts is not None:
            if len(texts) != patches.shape[0]:
                raise ValueError(f"got {len(texts)} texts for {patches.shape[0]} images")
            p_hat = self.position_head(tokens[:, 0])  # (B, c, d)
            p_set = self.position_embeddings().to(p_hat.dtype)  # (P, d), unnormalised
            out["position_logits"] = p_hat @ p_set.T
            out["position_noise"] = self._noise(p_hat.shape[0], p_hat.shape[1], patches.device)
        if return_attention:
            out["attention"] = attn.reshape(*attn.shape[:3], h, w)
        return out

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, class_names: Sequence[str] | None = None):
        """(B, c') existence probabilities for the model's classes or any class texts."""
        queries = None if class_names is None else self.class_queries(class_names)
        return torch.sigmoid(self.forward(images, queries=queries)["logits"].float())


def build_model(cfg: Config, classes: Sequence[str]) -> MedKLIP:
    """A fresh MedKLIP-style model over ``classes`` (deterministic under ``cfg.seed``)."""
    return MedKLIP(cfg, tuple(classes))


__all__ = ["MedKLIP", "build_model", "conquer_loss", "decode", "existence_loss",
           "position_loss", "sample_negatives"]
