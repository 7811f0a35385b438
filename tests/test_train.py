"""The trainer (paper Section III-C): Conquer then Divide, frozen encoders, schedule, NaN guard.

Runs on a tiny synthetic two-source dataset (32 px, ``helpers.synth``) so the file stays
fast; the end-to-end run on the embedded world is in ``test_train_stages.py``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from unichest_lib.training import checkpoints
from unichest_lib.training.optim import WarmupCosine
from unichest_lib.training.rng import seed_everything
from unichest_lib.training.stages import init_from_conquer
from unichest_lib.training.trainer import NonFiniteLossError, Trainer

from helpers import SOURCES, synth, tiny_cfg


@pytest.fixture(scope="module")
def data():
    return synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)


@pytest.fixture(scope="module")
def fresh(data):
    """Copies of one freshly built Conquer-stage model (building loads the text encoder,
    which is the slow part, so the file builds it once)."""
    from unichest_lib.model import UniChest

    proto = UniChest(tiny_cfg(), data[0].classes)
    return lambda: copy.deepcopy(proto)


@pytest.fixture(scope="module")
def conquer_run(data, fresh, tmp_path_factory):
    cfg = tiny_cfg()
    seed_everything(cfg.seed, cfg.deterministic)
    model = fresh()
    out = tmp_path_factory.mktemp("conquer")
    result = Trainer(cfg, "conquer", out, progress=False).fit(model, *data)
    return cfg, result


def test_conquer_writes_history_best_and_last(conquer_run):
    cfg, r = conquer_run
    h = r.history
    steps = h[h.split == "train"]
    assert list(steps.step) == [1, 2, 3, 4]  # 2 epochs x max_steps_per_epoch
    assert {"bcl_loss", "multilabel_loss", "loss", "lr"} <= set(h.columns)
    assert np.allclose(steps.loss, steps.bcl_loss + steps.multilabel_loss, atol=1e-5)
    valid = h[h.split == "valid"]
    assert list(valid.epoch) == [1, 2] and valid.val_aAUC.between(0, 1).all()
    assert r.best_metric == valid.val_aAUC.max()
    assert checkpoints.read_meta(r.checkpoint)["extra"]["best_metric"] == r.best_metric
    assert checkpoints.read_meta(r.last_checkpoint)["extra"]["epoch"] == 2


def test_cosine_schedule_with_warmup_reaches_zero():
    f = WarmupCosine(total=10, warmup=2)
    lrs = [f(s) for s in range(11)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and lrs[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # monotone after warm-up
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_divide_keeps_encoders_bit_identical_and_optimizer_state_only_for_moe(conquer_run, data,
                                                                             fresh, tmp_path):
    cfg, r = conquer_run
    model = fresh()
    init_from_conquer(model, r.checkpoint)
    assert model.stage == "divide"
    before = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("image_encoder.", "text_encoder."))}
    conquer_state = checkpoints.model_state(checkpoints.read_tensors(r.checkpoint)[0])
    for k in before:  # the encoders (BN running stats included) came from the checkpoint
        if k in conquer_state:
            assert torch.equal(before[k], conquer_state[k]), k
    trainer = Trainer(cfg, "divide", tmp_path, progress=False).bind(model, *data)
    res = trainer.fit()
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"frozen tensor {k} changed during Divide"
    assert "running_mean" in " ".join(before)  # batch-norm statistics were among them
    frozen = {id(p) for n, p in model.named_parameters() if n.startswith(("image_encoder.", "text_encoder."))}
    state_ids = {id(p) for p in trainer.optimizer.state}
    assert state_ids and not (state_ids & frozen), "optimizer holds state for frozen parameters"
    init = fresh().start_divide().state_dict()
    moved = [n for n, p in model.named_parameters()
             if n.startswith("experts.") and not torch.equal(p, init[n])]
    assert moved, "the experts did not train"
    h = res.history[res.history.split == "train"]
    assert {"scl_loss", "bcl_loss", "multilabel_loss"} <= set(h.columns)


def test_divide_experts_start_fresh_not_from_checkpoint(conquer_run, fresh):
    cfg, r = conquer_run
    model = fresh()
    init_from_conquer(model, r.checkpoint)
    for k, v in fresh().start_divide().state_dict().items():
        if k.startswith(("experts.", "gate.", "scl_proj.")):
            assert torch.equal(v, model.state_dict()[k]), k


def test_non_finite_loss_raises_naming_the_term_and_writes_no_checkpoint(data, fresh, tmp_path):
    from unichest_lib.training import losses

    cfg = tiny_cfg(conquer_epochs=1)

    def poisoned(out, batch, cfg):
        terms = losses.conquer_loss(out, batch, cfg)
        terms["multilabel_loss"] = terms["multilabel_loss"] * float("nan")
        terms["loss"] = terms["bcl_loss"] + terms["multilabel_loss"]
        return terms

    trainer = Trainer(cfg, "conquer", tmp_path, progress=False,
                      loss_fn=poisoned).bind(fresh(), *data)
    with pytest.raises(NonFiniteLossError) as e:
        trainer.fit()
    msg = str(e.value)
    assert "multilabel_loss" in msg and "step 1" in msg and "epoch 1" in msg
    assert "chestxray14" in msg or "vindr" in msg
    assert not checkpoints.exists(tmp_path / "last") and not checkpoints.exists(tmp_path / "best")


def test_checkpoint_refuses_nan_parameters(fresh, tmp_path):
    cfg = tiny_cfg()
    model = fresh()
    with torch.no_grad():
        model.qn1.head2.bias.fill_(float("nan"))
    with pytest.raises(checkpoints.CheckpointError, match="non-finite"):
        checkpoints.save(tmp_path / "x", model, cfg)
    assert not checkpoints.exists(tmp_path / "x")


def test_trainer_pools_the_class_queries_as_a_reloaded_model_does(data, fresh, tmp_path):
    """The queries' pooled text features in training are bit-identical to what a fresh
    process computes for the checkpoint, so the validation aAUC that selected a checkpoint is
    the aAUC it scores later (a padded batch shared with other texts changes the last bits,
    which bf16 then amplifies)."""
    model = fresh()
    Trainer(tiny_cfg(), "conquer", tmp_path, progress=False).bind(model, *data)._warm_text_cache()
    cached = torch.stack([model.text_encoder.cached()[c] for c in model.classes])
    reloaded = fresh()  # nothing cached, as after checkpoints.load in a new process
    assert torch.equal(cached, reloaded.text_encoder.pooled(list(reloaded.classes)))
    texts = set(data[0].table.texts)
    assert texts <= set(model.text_encoder.cached())  # and every training text was pooled once
