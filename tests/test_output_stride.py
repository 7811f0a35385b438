"""The image encoder's output stride (issue #15, grounding): ``output_stride`` 16 or 8 dilates
the last ResNet stages instead of striding, so the patch grid is 2x or 4x finer with the same
weights. Grid sizes, agreement with torchvision's own dilation, unchanged weight shapes, a
training step and grounding maps on the finer grid, and checkpoints of another stride refused."""

from __future__ import annotations

import copy
import tempfile
import warnings

import pytest
import torch
import torchvision

from unichest_lib.config import BACKBONES, OUTPUT_STRIDES, ConfigError, resolve
from unichest_lib.data import collate
from unichest_lib.evaluation.grounding import heatmaps_from_output
from unichest_lib.model import UniChest
from unichest_lib.model.encoders import ImageEncoder, dilate_last_stages
from unichest_lib.training import checkpoints, features, keys, stages
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("stride", OUTPUT_STRIDES)
def test_the_grid_is_the_image_size_over_the_stride(backbone, stride):
    enc = ImageEncoder(backbone, 8, output_stride=stride).eval()
    with torch.no_grad():
        patches, grid = enc(torch.rand(2, 1, 64, 96))
    assert grid == (64 // stride, 96 // stride)
    assert patches.shape == (2, grid[0] * grid[1], 8)


def test_torchvision_refuses_dilation_in_basic_blocks_so_the_library_does_it():
    with pytest.raises(NotImplementedError, match="BasicBlock"):
        torchvision.models.resnet18(replace_stride_with_dilation=[False, False, True])


@pytest.mark.parametrize("stride", [16, 8])
def test_own_dilation_is_torchvisions_on_bottleneck_resnets(stride):
    torch.manual_seed(0)
    flags = [False, stride <= 8, stride <= 16]
    theirs = torchvision.models.resnet50(replace_stride_with_dilation=flags).eval()
    ours = dilate_last_stages(torchvision.models.resnet50(), stride).eval()
    ours.load_state_dict(theirs.state_dict())
    convs = [(n, m) for n, m in theirs.named_modules() if isinstance(m, torch.nn.Conv2d)]
    mine = dict(ours.named_modules())
    for name, conv in convs:
        got = mine[name]
        assert (got.stride, got.dilation, got.padding) == (conv.stride, conv.dilation,
                                                           conv.padding), name
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_weights_have_the_same_names_and_shapes_at_every_stride(backbone):
    """So ImageNet weights, and a stride-32 encoder's, load into a dilated encoder."""
    shapes = {s: {k: v.shape for k, v in ImageEncoder(backbone, 8, output_stride=s)
                  .state_dict().items()} for s in OUTPUT_STRIDES}
    assert shapes[16] == shapes[32] == shapes[8]
    if backbone == "resnet18":
        plain = ImageEncoder(backbone, 8).state_dict()
        ImageEncoder(backbone, 8, output_stride=8).load_state_dict(plain, strict=True)


def test_the_option_is_validated_and_keeps_old_keys_at_32():
    cfg = resolve("tutorial")
    assert cfg.output_stride == 32 and resolve("paper").output_stride == 32
    assert resolve("tutorial", output_stride="16").output_stride == 16
    with pytest.raises(ConfigError, match=r"'output_stride' = 12 is not valid.*\(32, 16, 8\)"):
        resolve("tutorial", output_stride=12)
    with pytest.raises(ValueError, match="output_stride"):
        ImageEncoder("resnet18", 8, output_stride=4)
    finer = cfg.replace(output_stride=16)
    assert keys.conquer_key(finer) != keys.conquer_key(cfg)  # names new artifacts
    assert "output_stride" not in keys.keyed(cfg, keys.conquer_fields())


def test_a_conquer_and_a_divide_step_and_grounding_run_on_the_finer_grid():
    cfg = tiny_cfg(image_size=64, output_stride=16)
    data, val = synth(SOURCES, 4, 64, 0), synth(SOURCES[:1], 4, 64, 1)
    model = UniChest(cfg, data.classes)
    batch = collate([data[i] for i in range(cfg.batch_size)])
    with tempfile.TemporaryDirectory() as out:
        terms = Trainer(cfg, "conquer", out,
                        progress=False).bind(model, data, val).train_step(batch)
        assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
        model.start_divide()
        feats = features.encode(model, data, cfg)
        assert feats.grid == (4, 4) and feats.patches.shape[1] == 16
        trainer = Trainer(cfg, "divide", out, progress=False,
                          callbacks=[features.RunCache(features=feats)]).bind(model, data, val)
        terms = trainer.train_step(batch)
        assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    model.eval()
    with torch.no_grad():
        out = model(batch["image"], return_attention=True)
    assert out["attention"].shape[-2:] == (4, 4)
    maps = heatmaps_from_output(out, 64, lam=cfg.lam)
    assert maps.shape == (cfg.batch_size, len(data.classes), 64, 64)


def test_a_checkpoint_of_another_stride_is_refused_and_old_records_count_as_32(tmp_path):
    cfg = tiny_cfg(output_stride=16)
    model = UniChest(cfg, synth(SOURCES, 1, 32, 0).classes)
    checkpoints.save(tmp_path / "ck", model, cfg)
    with pytest.raises(checkpoints.CheckpointError,
                       match="output_stride: checkpoint 16, requested 32"):
        checkpoints.load(tmp_path / "ck", cfg.replace(output_stride=32))
    assert checkpoints.load(tmp_path / "ck", cfg).image_encoder.output_stride == 16
    meta = copy.deepcopy(checkpoints.read_meta(tmp_path / "ck"))
    del meta["config"]["output_stride"]  # a record written before the option existed
    plain = cfg.replace(output_stride=32)
    checkpoints.check_compatible(meta, plain)  # no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stages._check_conquer_settings(meta, plain)  # and no warning either
    with pytest.raises(checkpoints.CheckpointError, match="checkpoint 32, requested 16"):
        checkpoints.check_compatible(meta, cfg)
