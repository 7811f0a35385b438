"""Divide on stored frozen features (unichest_lib.training.features, cfg.divide_on_features):
the same outputs as encoding the images, and without augmentation the same training run."""

from __future__ import annotations

import copy

import pytest
import torch

from unichest_lib.config import resolve
from unichest_lib.training import features, keys
from unichest_lib.training.rng import seed_everything
from unichest_lib.training.stages import init_from_conquer
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg


@pytest.fixture(scope="module")
def data():
    return synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)


@pytest.fixture(scope="module")
def conquer(data, tmp_path_factory):
    from unichest_lib.model import UniChest

    cfg = tiny_cfg(K=3)
    seed_everything(cfg.seed, cfg.deterministic)
    proto = UniChest(cfg, data[0].classes)
    result = Trainer(cfg, "conquer", tmp_path_factory.mktemp("conquer"),
                     progress=False).fit(copy.deepcopy(proto), *data)
    return cfg, proto, result.checkpoint


def _divide_model(conquer):
    cfg, proto, ckpt = conquer
    model = copy.deepcopy(proto)
    init_from_conquer(model, ckpt)
    return model


def test_stored_patches_give_the_same_outputs_as_images(conquer, data):
    model = _divide_model(conquer).eval()
    batch = [data[0][i] for i in range(5)]
    images = torch.stack([b["image"] for b in batch])
    texts = [b["text"] for b in batch]
    fs = features.encode(model, data[0], conquer[0])
    assert fs.patches.shape[0] == len(data[0]) and fs.grid == (1, 1)
    assert not fs.patches.requires_grad and not fs.patches.is_inference()
    with torch.no_grad():
        ref = model(images, texts=texts)
        out = model(None, texts=texts, patches=fs.batch(torch.arange(5), "cpu"), grid=fs.grid)
    for k in ("logits", "scores", "gate", "gate_proj", "image_emb", "text_emb"):
        torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-5)


def test_patches_replace_images_only_in_divide(conquer, data):
    cfg, proto, _ = conquer
    p = torch.zeros(2, 1, cfg.embed_dim)
    with pytest.raises(ValueError, match="only in the Divide stage"):
        copy.deepcopy(proto)(None, patches=p, grid=(1, 1))  # Conquer trains the encoder
    with pytest.raises(ValueError, match="grid"):
        _divide_model(conquer)(None, patches=p)


def test_features_of_another_dataset_are_refused(conquer, data, tmp_path):
    cfg = conquer[0]
    model = _divide_model(conquer)
    fs = features.encode(model, data[1], cfg)  # the validation set's rows
    with pytest.raises(ValueError, match="rows"):
        Trainer(cfg, "divide", tmp_path, progress=False,
                callbacks=[features.RunCache(features=fs)]).bind(model, *data)
    with pytest.raises(IndexError, match="another dataset"):
        fs.batch(torch.tensor([len(data[1])]), "cpu")


def test_without_augmentation_divide_on_features_is_the_same_run(conquer, data, tmp_path):
    """Augmentation off: the stored patches are what the frozen encoder would compute, so the
    loss curve and the trained heads match a Divide on images (up to float rounding, which
    AdamW carries through the steps: with one intra-op thread a weight differed by 1.01e-5,
    so the tolerance is 5e-5)."""
    cfg = conquer[0].replace(divide_epochs=2)
    runs = {}
    for on in (False, True):
        c = cfg.replace(divide_on_features=on)
        seed_everything(c.seed, c.deterministic)
        model = _divide_model(conquer)
        trainer = Trainer(c, "divide", tmp_path / str(on), progress=False).bind(model, *data)
        runs[on] = (trainer.fit(), trainer)
    assert runs[False][1].features is None and runs[True][1].features is not None
    h = [r.history[r.history.split == "train"] for r, _ in runs.values()]
    assert len(h[0]) == len(h[1]) == 4
    for col in ("loss", "scl_loss", "multilabel_loss", "bcl_loss"):
        torch.testing.assert_close(torch.tensor(h[1][col].values), torch.tensor(h[0][col].values),
                                   rtol=1e-4, atol=1e-5)
    a, b = (r.model.state_dict() for r, _ in runs.values())
    for k in a:
        if k.startswith(("experts.", "qn1.", "gate.")):
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=5e-5)
    assert any(not torch.equal(a[k], _divide_model(conquer).state_dict()[k])
               for k in a if k.startswith("experts."))  # and the heads did train


def test_divide_on_features_is_part_of_the_divide_key_only():
    cfg = resolve("smoke", divide_on_features=False)
    on = cfg.replace(divide_on_features=True)
    assert keys.conquer_key(on) == keys.conquer_key(cfg)
    assert keys.divide_key(on) != keys.divide_key(cfg)


# ---- the shared store: memory, then disk --------------------------------------------------------
def _feats(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return features.FrozenFeatures(patches=torch.randn(n, 4, 8, generator=g).to(torch.bfloat16),
                                   grid=(2, 2), n_rows=n)


def test_shared_features_are_encoded_once_then_read_back_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(features, "_SHARED", {})
    calls = []

    def make():
        calls.append(1)
        return _feats()

    a = features.shared("k1", make, cache_dir=tmp_path)
    assert features.shared("k1", make, cache_dir=tmp_path) is a and len(calls) == 1  # memory
    features._SHARED.clear()  # a new process: the disk cache answers
    b = features.shared("k1", make, cache_dir=tmp_path)
    assert len(calls) == 1 and b.grid == a.grid and b.n_rows == a.n_rows
    assert b.patches.dtype == torch.bfloat16 and torch.equal(b.patches, a.patches)
    assert not list((tmp_path / "features").glob("*.tmp"))  # atomic writes leave nothing behind


def test_damaged_or_foreign_feature_files_are_recomputed(tmp_path, monkeypatch):
    monkeypatch.setattr(features, "_SHARED", {})
    features.shared("k2", _feats, cache_dir=tmp_path)
    (path,) = (tmp_path / "features").glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    features._SHARED.clear()
    calls = []
    out = features.shared("k2", lambda: calls.append(1) or _feats(seed=1), cache_dir=tmp_path)
    assert calls and torch.equal(out.patches, _feats(seed=1).patches)
    # a file that holds another key's features (a hash collision) is not used
    features._SHARED.clear()
    features._save(path, "another key", _feats(seed=2))
    out = features.shared("k2", lambda: _feats(seed=3), cache_dir=tmp_path)
    assert torch.equal(out.patches, _feats(seed=3).patches)


def test_memory_store_drops_the_least_recently_used_beyond_its_budget(monkeypatch):
    monkeypatch.setattr(features, "_SHARED", {})
    one = _feats().patches.numel() * 2
    monkeypatch.setattr(features, "MAX_MEMORY_BYTES", 2 * one)
    for k in ("a", "b"):
        features.shared(k, _feats)
    features.shared("a", lambda: pytest.fail("'a' is still in memory"))  # a used last
    features.shared("c", _feats)
    assert set(features._SHARED) == {"a", "c"}


def test_features_key_names_the_checkpoint_the_rows_and_the_data_settings(tmp_path):
    from unichest_lib.data import make_dataset

    cfg = resolve("smoke", cache_dir=str(tmp_path), n_per_source=40, image_size=32)
    ds = make_dataset(cfg, ["chexpert"], "train")
    key = features.features_key("abc", ds, cfg)
    assert key == features.features_key("abc", make_dataset(cfg, ["chexpert"], "train"), cfg)
    assert key == features.features_key("abc", ds, cfg.replace(seed=4, K=2, lam=0.3))
    assert key != features.features_key("abd", ds, cfg)
    assert key != features.features_key("abc", ds, cfg.replace(heterogeneity=0.0))
    assert key != features.features_key("abc", ds, cfg.replace(amp=not cfg.amp))
    other = make_dataset(cfg.replace(world_seed=cfg.world_seed + 1), ["chexpert"], "train")
    assert other.name == ds.name  # same name, other images and labels
    assert key != features.features_key("abc", other, cfg)
