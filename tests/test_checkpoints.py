"""Safe checkpoints: safetensors + JSON, atomic, checksum-verified, config diff on load."""

from __future__ import annotations

import copy
import json
import os
import pickle

import pytest
import torch

from unichest_lib.config import resolve
from unichest_lib.data.label_spaces import union_classes
from unichest_lib.fileio import sha256
from unichest_lib.training import checkpoints

CFG = resolve("smoke", image_size=32, sources="chestxray14,vindr", val_source="chestxray14")
CLASSES = union_classes(CFG.sources, CFG.data)


@pytest.fixture(scope="module")
def proto():
    from unichest_lib.model import UniChest

    return UniChest(CFG, CLASSES)


@pytest.fixture
def divide_model(proto):
    m = copy.deepcopy(proto).start_divide()
    with torch.no_grad():  # make the experts differ from any fresh initialisation
        m.experts.head2.bias.add_(0.25)
    return m


def _equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_roundtrip_restores_every_tensor_and_records_the_config(divide_model, tmp_path):
    path = checkpoints.save(tmp_path / "ck", divide_model, CFG, extra={"note": "x"})
    meta = json.loads((tmp_path / "ck.json").read_text())
    assert meta["config"] == CFG.to_dict() and meta["classes"] == list(CLASSES)
    assert (meta["stage"], meta["K"], meta["d"]) == ("divide", CFG.K, CFG.embed_dim)
    assert meta["library_version"] and meta["extra"] == {"note": "x"}
    assert meta["sha256"] == sha256(tmp_path / "ck.safetensors")
    # the frozen pre-trained text backbone is not copied, only fingerprinted
    assert list(meta["omitted"]) == ["text_encoder.backbone."]
    loaded = checkpoints.load(path, CFG)
    assert loaded.stage == "divide" and loaded.classes == CLASSES
    _equal_states(divide_model, loaded)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_optimizer_state_roundtrips_without_pickle(proto, tmp_path):
    model = copy.deepcopy(proto)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    out = model(torch.rand(2, 1, 32, 32), texts=["a", "b"])
    out["logits"].sum().backward()
    opt.step()
    checkpoints.save(tmp_path / "ck", model, CFG, optimizer=opt)
    tensors, meta = checkpoints.read_tensors(tmp_path / "ck")
    state = checkpoints.optimizer_state(tensors, meta)
    opt2 = torch.optim.AdamW(model.trainable_parameters(), lr=5.0)
    opt2.load_state_dict(state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 1e-3
    for pid, slots in a["state"].items():
        for k, v in slots.items():
            assert torch.equal(v, b["state"][pid][k]), (pid, k)


def test_a_different_configuration_is_refused_with_a_diff(divide_model, tmp_path):
    checkpoints.save(tmp_path / "ck", divide_model, CFG)
    other = CFG.replace(K=3, embed_dim=32)
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load(tmp_path / "ck", other)
    msg = str(e.value)
    assert "K: checkpoint 4, requested 3" in msg and "embed_dim: checkpoint 64, requested 32" in msg


def test_class_list_difference_is_named(divide_model, tmp_path):
    checkpoints.save(tmp_path / "ck", divide_model, CFG)
    meta = checkpoints.read_meta(tmp_path / "ck")
    with pytest.raises(checkpoints.CheckpointError, match="only requested \\['tuberculosis'\\]"):
        checkpoints.check_compatible(meta, CFG, list(CLASSES) + ["tuberculosis"])


def test_conquer_checkpoint_is_not_compared_on_divide_only_fields(proto, tmp_path):
    checkpoints.save(tmp_path / "ck", proto, CFG)
    meta = checkpoints.read_meta(tmp_path / "ck")
    checkpoints.check_compatible(meta, CFG.replace(K=2, scl_dim=8))  # no error
    with pytest.raises(checkpoints.CheckpointError, match="n_decoder_layers"):
        checkpoints.check_compatible(meta, CFG.replace(n_decoder_layers=2))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_or_truncated_file_fails_the_checksum(proto, tmp_path, damage):
    checkpoints.save(tmp_path / "ck", proto, CFG)
    f = tmp_path / "ck.safetensors"
    blob = bytearray(f.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    else:
        blob = blob[: len(blob) // 3]
    f.write_bytes(bytes(blob))
    with pytest.raises(checkpoints.CheckpointError, match="checksum"):
        checkpoints.load(tmp_path / "ck")


def test_missing_checkpoint_names_both_files(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="nothing.safetensors"):
        checkpoints.load(tmp_path / "nothing")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_legacy_pt_is_read_without_executing_code(proto, tmp_path):
    marker = str(tmp_path / "pwned")
    bad = tmp_path / "bad.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": _Exploit(marker)}, f)
    with pytest.raises(Exception) as e:
        checkpoints.load(bad, CFG)
    assert not os.path.exists(marker), "loading a .pt file executed code"
    assert "weights_only" in str(e.value) or "Unpickl" in type(e.value).__name__
    good = tmp_path / "good.pt"
    torch.save({"model": proto.state_dict(), "classes": list(CLASSES), "stage": "conquer"}, good)
    _equal_states(proto, checkpoints.load(good, CFG))
