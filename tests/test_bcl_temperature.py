"""The learnable temperature of L_BCL (``bcl_variant="learnable"``, CLIP's; issue #15): the
scale trains in Conquer, is clamped at 100, is frozen in Divide, round-trips through
checkpoints, refuses a checkpoint of another setting early, and leaves the keys of the earlier
settings alone. The loss itself is checked against a slow reference in ``test_losses.py``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unichest_lib.config import ConfigError, resolve
from unichest_lib.data import collate
from unichest_lib.model import BCL_LOGIT_SCALE_INIT, UniChest
from unichest_lib.training import checkpoints, keys, losses
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg

LOG100 = math.log(100)


@pytest.fixture(scope="module")
def data():
    return synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)


def _batch(ds, n):
    return collate([ds[i] for i in range(n)])


# ---- configuration ------------------------------------------------------------------------------
def test_the_option_is_validated_by_name_and_tau_only_goes_with_the_paper():
    with pytest.raises(ConfigError, match="bcl_variant"):
        resolve("smoke", bcl_variant="clip")
    with pytest.raises(ConfigError, match="tau_bcl"):
        resolve("smoke", bcl_variant="learnable", tau_bcl=0.07)
    assert resolve("smoke", bcl_variant="paper", tau_bcl=0.07).tau_bcl == 0.07


def test_keys_of_the_earlier_settings_are_unchanged_and_learnable_names_new_runs():
    cfg = resolve("tutorial")
    assert cfg.bcl_variant == "paper"  # still the default (the legacy keys pin its key)
    learn = cfg.replace(bcl_variant="learnable")
    for stage in keys.STAGES:
        assert keys.key(learn, stage) != keys.key(cfg, stage)
        assert keys.key(learn, stage) != keys.key(cfg.replace(bcl_variant="code"), stage)


# ---- the model and the trainer ------------------------------------------------------------------
def test_only_the_learnable_setting_has_the_parameter_and_it_starts_at_clip_init():
    classes = ("atelectasis", "edema")
    for v in ("paper", "code"):
        m = UniChest(tiny_cfg(bcl_variant=v), classes)
        assert m.bcl_logit_scale is None and "bcl_logit_scale" not in m.state_dict()
    m = UniChest(tiny_cfg(bcl_variant="learnable"), classes)
    assert m.bcl_logit_scale.item() == pytest.approx(BCL_LOGIT_SCALE_INIT)
    assert BCL_LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07))
    assert m.bcl_logit_scale.requires_grad and "bcl_logit_scale" in m.state_dict()


def test_conquer_optimises_the_scale_and_the_clamp_holds_after_every_step(data, tmp_path):
    cfg = tiny_cfg(bcl_variant="learnable", lr=0.5)
    train, val = data
    model = UniChest(cfg, train.classes)
    trainer = Trainer(cfg, "conquer", tmp_path, progress=False).bind(model, train, val)
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(model.bcl_logit_scale) in in_opt
    batch = _batch(train, cfg.batch_size)
    before = model.bcl_logit_scale.item()
    with torch.no_grad():  # the loss the trainer computes uses the model's scale
        out = model(batch["image"], texts=batch["text"])
        got = trainer.loss_terms(out, batch)["bcl_loss"]
        want = losses.bcl_loss(out["image_emb"], out["text_emb"], variant="learnable",
                               logit_scale=model.bcl_logit_scale)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    trainer.train_step(batch)
    assert model.bcl_logit_scale.item() != before  # the gradient reached it
    with torch.no_grad():
        model.bcl_logit_scale.fill_(LOG100 + 0.5)  # above the bound, as a long run could drift
    for _ in range(3):
        trainer.train_step(batch)
        assert model.bcl_logit_scale.item() <= LOG100 + 1e-6


def test_divide_freezes_the_scale_through_training_steps(data, tmp_path):
    cfg = tiny_cfg(bcl_variant="learnable", K=3, divide_on_features=False, lr=0.5)
    train, val = data
    model = UniChest(cfg, train.classes)
    with torch.no_grad():
        model.bcl_logit_scale.fill_(2.0)
    model.start_divide()
    assert not model.bcl_logit_scale.requires_grad
    assert all(p is not model.bcl_logit_scale for p in model.trainable_parameters())
    trainer = Trainer(cfg, "divide", tmp_path, progress=False).bind(model, train, val)
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(model.bcl_logit_scale) not in in_opt
    qn1_before = model.qn1.head2.weight.clone()
    for _ in range(2):
        trainer.train_step(_batch(train, cfg.batch_size))
    assert model.bcl_logit_scale.item() == 2.0
    assert not torch.equal(qn1_before, model.qn1.head2.weight)  # the trainable part did train


# ---- checkpoints ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    """A learnable Conquer checkpoint (scale set to 3.3) and a paper one, same architecture."""
    root = tmp_path_factory.mktemp("ck")
    train = data[0]
    out = {}
    for v in ("learnable", "paper"):
        cfg = tiny_cfg(bcl_variant=v)
        m = UniChest(cfg, train.classes)
        if v == "learnable":
            with torch.no_grad():
                m.bcl_logit_scale.fill_(3.3)
        out[v] = (checkpoints.save(root / v, m, cfg), cfg)
    return out


def test_a_learnable_checkpoint_round_trips_its_scale_in_safetensors(saved):
    path, cfg = saved["learnable"]
    tensors, _ = checkpoints.read_tensors(path)
    assert checkpoints.model_state(tensors)["bcl_logit_scale"].item() == pytest.approx(3.3)
    for use in (cfg, None):
        m = checkpoints.load(path, use)
        assert m.bcl_logit_scale.item() == pytest.approx(3.3)


def test_a_checkpoint_of_another_setting_fails_early_with_the_field_named(saved):
    learn_path, learn_cfg = saved["learnable"]
    paper_path, paper_cfg = saved["paper"]
    with pytest.raises(checkpoints.CheckpointError,
                       match="bcl_variant: checkpoint 'learnable', requested 'paper'"):
        checkpoints.load(learn_path, paper_cfg)
    with pytest.raises(checkpoints.CheckpointError,
                       match="bcl_variant: checkpoint 'paper', requested 'learnable'"):
        checkpoints.load(paper_path, learn_cfg)
    # paper and code have the same tensors: they still load each other's files
    assert checkpoints.load(paper_path, paper_cfg.replace(bcl_variant="code")).bcl_logit_scale \
        is None


def test_an_old_checkpoint_without_the_field_loads_when_the_option_is_off(saved, tmp_path):
    import shutil

    path, cfg = saved["paper"]
    for suffix in (".safetensors", ".json"):
        shutil.copy(str(path) + suffix, tmp_path / f"old{suffix}")
    record = json.loads((tmp_path / "old.json").read_text())
    del record["config"]["bcl_variant"]  # a record written before the field existed
    (tmp_path / "old.json").write_text(json.dumps(record))
    assert checkpoints.load(tmp_path / "old", cfg).bcl_logit_scale is None
    with pytest.raises(checkpoints.CheckpointError, match="bcl_variant"):
        checkpoints.load(tmp_path / "old", cfg.replace(bcl_variant="learnable"))
