"""What the library wrote before must still work: store keys are pinned to the hex strings
the code of ``061e929`` computed, and a store that code wrote (``tests/fixtures/legacy_store``)
is found, verified and loaded without training anything, as long as the embedded world is the
one it was trained on (``keys.WORLD_VERSION`` 1; a later world names new artifacts)."""

from __future__ import annotations

import gzip
import json
import pathlib
import shutil

import pytest
import torch

from unichest_lib.training import store
from unichest_lib.config import resolve

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "legacy_store"

#: The keys of four configurations as computed by the library before issue #17 (the one
#: legitimately hard-coded value: any change here would orphan every trained artifact).
PINNED = {
    ("smoke", ()): {
        "conquer": "e144f9a376827b4c37ccb5a0a75cd16e7faec21a286f78ee7af3f88eba766667",
        "divide": "68a03e91dd50d3eb6ba0ca064efeb80f1531a898306af7f2a2abdf95b67527eb",
        "continued": "596f5dd92d1cb2f12ed4c3b89ef5bef79d735d039bfd70ac4067e50d47cbb26d"},
    ("tutorial", ()): {
        "conquer": "8ae36c3636d75a471ea00e2b76fdd2dcee200283b77a73399c4250ffe1c27da8",
        "divide": "1c9b47a9875c21ec7145ac01d2a01e5355736cc25b93f369f3adfeb041066370",
        "continued": "739161cbc42e9a4e1e1c742777f0c54864dc1e8aa1682aada55df73a577fefcc"},
    ("paper", ()): {
        "conquer": "e90d9e658de5a5fe879126ac7b10a2d00354500604de9c8a85ea126f563807ac",
        "divide": "7f61421df9f574534a0942a61e7f65c77b643ada2b80f601966d13038a8a5359",
        "continued": "2af3c2545ef099fd8bb8b114ed446766fc494448aa3a80245d6db14838245196"},
    ("tutorial", (("K", 3), ("lam", 0.3), ("seed", 2), ("heterogeneity", 0.5))): {
        "conquer": "a5ba3cb8ceda8d3f5437bc4accdeb09dd95fc4858930a4214af03001676120ed",
        "divide": "d8508516757f2f82edc99b9b80782449ee111c1efc32b72effccdf13f0ebe891",
        "continued": "961c9dacbde84f68c5351c3d9d8a40a87e9bd44a016a2313bb30f28f7f020cce"},
}
#: The fixture's configuration (its ``cache_dir`` is replaced by a temporary folder).
LEGACY = dict(image_size=32, embed_dim=16, n_heads=2, ffn_dim=16, n_decoder_layers=1, K=3,
              scl_dim=4)


@pytest.fixture
def world_v1(monkeypatch):
    """The embedded world the pinned keys and the fixture store were computed on, in the
    precision they stand for (float32: the keys did not record precision then)."""
    from unichest_lib import hardware
    from unichest_lib.training import keys

    monkeypatch.setattr(keys, "WORLD_VERSION", 1)
    monkeypatch.setattr(hardware, "effective_precision", lambda amp, device="auto": "float32")


def test_the_effective_precision_names_new_artifacts_and_float32_keeps_the_old_names(
        world_v1, monkeypatch):
    from unichest_lib import hardware
    from unichest_lib.training import keys

    cfg = resolve("tutorial")
    assert keys.precision(cfg) == {} and "precision" not in keys.upstream(cfg)
    f32 = {stage: store.key(cfg, stage) for stage in ("conquer", "divide", "continued")}
    assert f32 == PINNED[("tutorial", ())]
    monkeypatch.setattr(hardware, "effective_precision", lambda amp, device="auto": "bfloat16")
    assert keys.upstream(cfg)["precision"] == "bfloat16"
    for stage, old in f32.items():
        assert store.key(cfg, stage) != old, "a bf16 run must not be served for a float32 one"


def test_the_effective_precision_is_what_autocast_does_on_the_device():
    from unichest_lib import hardware

    assert hardware.effective_precision(False, "cpu") == "float32"
    native = hardware.cpu_has_native_bf16()
    assert hardware.effective_precision(True, "cpu") == ("bfloat16" if native else "float32")


@pytest.mark.parametrize("profile, overrides", list(PINNED))
def test_store_keys_are_the_ones_computed_before_the_refactor(profile, overrides, world_v1):
    cfg = resolve(profile, **dict(overrides))
    got = {stage: store.key(cfg, stage) for stage in PINNED[(profile, overrides)]}
    assert got == PINNED[(profile, overrides)]


@pytest.mark.parametrize("profile, overrides", list(PINNED))
def test_a_later_world_names_new_artifacts(profile, overrides):
    from unichest_lib.training import keys

    assert keys.WORLD_VERSION > 1
    cfg = resolve(profile, **dict(overrides))
    for stage, old in PINNED[(profile, overrides)].items():
        assert store.key(cfg, stage) != old
    assert keys.upstream(cfg)["world_version"] == keys.WORLD_VERSION
    real = cfg.replace(data=str(FIXTURE / "no_such.yml"))  # real data: no world version
    assert "world_version" not in keys.upstream(real)


def unpack_store(fixture: pathlib.Path, cache_dir: pathlib.Path) -> None:
    """Copy a fixture's artifact folders under ``cache_dir/artifacts``, gunzipping tensors."""
    for folder in (p for p in fixture.iterdir() if p.is_dir()):
        dest = cache_dir / "artifacts" / folder.name
        dest.mkdir(parents=True)
        for f in folder.iterdir():
            if f.name.endswith(".gz"):
                with gzip.open(f, "rb") as src, open(dest / f.name[:-3], "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copyfile(f, dest / f.name)


@pytest.fixture
def legacy_store(tmp_path):
    """The fixture's artifacts unpacked under ``tmp_path/artifacts``; returns the config."""
    unpack_store(FIXTURE, tmp_path)
    return resolve("smoke", cache_dir=str(tmp_path), **LEGACY)


def _expected_value(i: int, t: torch.Tensor) -> float:
    return (i % 7) * 0.125 if t.is_floating_point() else i % 5


@pytest.mark.parametrize("stage", ["conquer", "divide"])
def test_a_store_written_before_the_refactor_loads_without_training(legacy_store, stage,
                                                                     monkeypatch, world_v1):
    cfg = legacy_store
    saved = json.loads((store.artifact_dir(cfg, stage) / "checkpoint.json").read_text())
    assert "nan_policy" in saved["config"]  # written before the field was removed
    assert store.is_valid(cfg, stage)

    def no_training(*args, **kwargs):
        raise AssertionError("the store retrained an artifact that was already there")

    monkeypatch.setattr(store, "_build", no_training)
    model = store.load_model(cfg, stage, progress=False)
    assert model.stage == stage and not model.training
    state = model.state_dict()
    names = sorted(state)
    for i, name in enumerate(names):
        if name.startswith("text_encoder.backbone."):
            continue
        t = state[name]
        assert torch.all(t == _expected_value(i, t)), name
    if stage == "divide":
        assert model.experts is not None and model.experts.n == cfg.K - 1


def test_a_saved_configuration_with_a_removed_field_still_reads():
    from unichest_lib.config import REMOVED_FIELDS, Config, ConfigError

    cfg = resolve("smoke", K=3)
    old = {**cfg.to_dict(), **REMOVED_FIELDS}  # what a checkpoint written before records
    assert Config.from_dict(old) == cfg
    with pytest.raises(ConfigError, match="unknown parameter"):
        Config.from_dict({**cfg.to_dict(), "nan_polcy": "raise"})


def test_a_field_added_later_keeps_old_keys_at_its_old_value_and_names_new_runs_otherwise(
        world_v1):
    from unichest_lib.training import keys

    cfg = resolve("tutorial")
    for field, old in keys.ADDED_FIELDS.items():
        assert cfg.to_dict()[field] == old  # the default is the value earlier runs had
    official = cfg.replace(gate_input="layernorm")
    assert keys.conquer_key(official) == keys.conquer_key(cfg)  # a Divide-only field
    assert keys.divide_key(official) != keys.divide_key(cfg)
    one_dial = cfg.replace(dials=("label_meaning=0",))  # a world field: both stages change
    assert keys.conquer_key(one_dial) != keys.conquer_key(cfg)


# ---- a store written by the library of 2026-12-06 (before the thin-core refactor) ----------
STORE_2026_12 = pathlib.Path(__file__).parent / "fixtures" / "store_2026_12"


@pytest.fixture
def store_2026_12(tmp_path):
    """The fixture's artifacts unpacked under ``tmp_path/artifacts`` (``amp=False``: float32
    on any machine, as written)."""
    import importlib.util

    unpack_store(STORE_2026_12, tmp_path)
    spec = importlib.util.spec_from_file_location("make_fixture", STORE_2026_12 / "make_fixture.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)  # only for CONFIG and probe_images: nothing is re-written
    return resolve("smoke", cache_dir=str(tmp_path), **maker.CONFIG), maker.probe_images()


@pytest.mark.parametrize("stage", ["conquer", "divide"])
def test_a_store_of_2026_12_loads_without_training_and_gives_the_scores_it_recorded(
        store_2026_12, stage, monkeypatch):
    cfg, images = store_2026_12
    assert store.is_valid(cfg, stage), "the keys or the checksum of that store changed"

    def no_training(*args, **kwargs):
        raise AssertionError("the store retrained an artifact that was already there")

    monkeypatch.setattr(store, "_build", no_training)
    model = store.load_model(cfg, stage, progress=False)
    recorded = torch.tensor(json.loads((STORE_2026_12 / "scores.json").read_text())["scores"][stage])
    with torch.no_grad():
        scores = model(images)["logits"].float()
    assert recorded.std(0).mean() > 1e-4, "the probe images must give different scores"
    torch.testing.assert_close(scores, recorded, rtol=0, atol=1e-5)
