"""The artifact store: keys follow the full upstream configuration; damage triggers a rebuild."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import torch

from unichest_lib.training import checkpoints, keys, store
from unichest_lib.config import Config, resolve

CFG = resolve("smoke")


def test_changing_K_keeps_the_conquer_key_but_changes_the_divide_key():
    other = CFG.replace(K=3)
    assert keys.conquer_key(other) == keys.conquer_key(CFG)
    assert keys.divide_key(other) != keys.divide_key(CFG)


@pytest.mark.parametrize("field, value", [("image_size", 128), ("seed", 1), ("lr", 1e-3),
                                          ("sources", ("chestxray14", "vindr")),
                                          ("conquer_epochs", 3), ("heterogeneity", 0.5)])
def test_upstream_changes_change_both_keys(field, value):
    kw = {field: value}
    if field == "sources":
        kw["val_source"] = "chestxray14"
    other = CFG.replace(**kw)
    assert keys.conquer_key(other) != keys.conquer_key(CFG)
    assert keys.divide_key(other) != keys.divide_key(CFG)


def test_every_field_is_classified_and_each_divide_field_changes_only_the_divide_key():
    names = {f.name for f in dataclasses.fields(Config)}
    assert set(keys.DIVIDE_ONLY) <= names and set(keys.NOT_UPSTREAM) <= names
    assert set(keys.conquer_fields()) | set(keys.DIVIDE_ONLY) | set(keys.NOT_UPSTREAM) == names
    changes = dict(K=2, lam=0.3, scl_dim=8, tau_scl=0.5, scl_variant="outside",
                   combine="probabilities", divide_epochs=7, divide_on_features=False,
                   scl_weight=0.5, gate="uniform", gate_input="layernorm")
    assert set(changes) == set(keys.DIVIDE_ONLY)
    for k, v in changes.items():
        other = CFG.replace(**{k: v})
        assert keys.conquer_key(other) == keys.conquer_key(CFG), k
        assert keys.divide_key(other) != keys.divide_key(CFG), k


def test_where_things_run_does_not_change_the_key(tmp_path):
    other = CFG.replace(num_workers=2, device="cpu", eval_batch_size=8)
    assert keys.conquer_key(other) == keys.conquer_key(CFG)
    moved = CFG.replace(cache_dir=str(tmp_path))
    assert keys.divide_key(moved) == keys.divide_key(CFG)
    assert store.artifact_dir(moved, "conquer").parent == tmp_path / "artifacts"


class _Tiny:
    """Stands in for a trained model: the store only moves checkpoint files around."""

    classes = ("a",)
    stage = "conquer"

    def __init__(self):
        import torch

        self.w = torch.arange(4.0)

    def state_dict(self):
        return {"w": self.w}


def test_damaged_artifact_is_detected_and_rebuilt(tmp_path, monkeypatch):
    cfg = CFG.replace(cache_dir=str(tmp_path))
    builds = []

    def fake_build(cfg, stage, progress):
        builds.append(stage)
        run = store.artifact_dir(cfg, stage) / "run"
        checkpoints.save(run / "best", _Tiny(), cfg, extra={"best_metric": 0.7})
        return store._publish(cfg, stage, run / "best")

    monkeypatch.setattr(store, "_build", fake_build)
    path = store.conquer_checkpoint(cfg, progress=False)
    assert builds == ["conquer"] and store.is_valid(cfg, "conquer")
    assert store.conquer_checkpoint(cfg, progress=False) == path and builds == ["conquer"]
    tensor_file = pathlib.Path(str(path) + ".safetensors")
    tensor_file.write_bytes(tensor_file.read_bytes()[:-7])  # truncate
    assert not store.is_valid(cfg, "conquer")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        store.conquer_checkpoint(cfg, progress=False)
    assert builds == ["conquer", "conquer"] and store.is_valid(cfg, "conquer")


def test_load_model_conquer_serves_every_K(tmp_path):
    """One Conquer artifact is shared by all K; loading it with another K must work."""
    cfg = resolve("smoke", cache_dir=str(tmp_path), max_steps_per_epoch=1, batch_size=4,
                  sources=("chestxray14",), K=4)
    m4 = store.load_model(cfg, "conquer", progress=False)
    m2 = store.load_model(cfg.replace(K=2), "conquer", progress=False)
    assert keys.conquer_key(cfg) == keys.conquer_key(cfg.replace(K=2))
    a, b = m4.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k in b)
