"""Interrupted runs (issue #9): a run killed with SIGKILL mid-epoch leaves its last completed
checkpoint intact, and resuming from it reproduces the uninterrupted run bit for bit (CPU,
``deterministic=True``; dropout, augmentation and Fourier mixup all on)."""

from __future__ import annotations

import copy
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from unichest_lib.training import checkpoints
from unichest_lib.training.rng import seed_everything
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg

HERE = pathlib.Path(__file__).resolve().parent
SETTINGS = dict(conquer_epochs=2, dropout=0.1, augment=True, fourier_mixup_p=0.5)

CHILD = textwrap.dedent("""
    import pathlib, sys, time
    import torch
    torch.set_num_threads({threads!r})  # the parent's: reductions then run in the same order
    sys.path.insert(0, {here!r})
    from helpers import SOURCES, synth, tiny_cfg
    from unichest_lib.model import UniChest
    from unichest_lib.training import losses
    from unichest_lib.training.rng import seed_everything
    from unichest_lib.training.trainer import Trainer

    cfg = tiny_cfg(**{settings!r})
    calls = []

    def loss_then_hang(out, batch, cfg):
        calls.append(1)
        if len(calls) == cfg.max_steps_per_epoch + 1:  # first step of epoch 2
            pathlib.Path({marker!r}).write_text("in epoch 2")
            time.sleep(600)
        return losses.conquer_loss(out, batch, cfg)

    seed_everything(cfg.seed, cfg.deterministic)
    data = synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)
    model = UniChest(cfg, data[0].classes)
    Trainer(cfg, "conquer", {out!r}, progress=False, loss_fn=loss_then_hang).fit(model, *data)
""")


@pytest.mark.slow
def test_sigkill_mid_epoch_keeps_last_checkpoint_and_resume_is_bit_identical(tmp_path):
    from unichest_lib.model import UniChest

    out, marker = tmp_path / "run", tmp_path / "marker"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(here=str(HERE), settings=SETTINGS, marker=str(marker),
                                   out=str(out), threads=torch.get_num_threads()))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    child = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        # meanwhile, the uninterrupted reference run in this process
        cfg = tiny_cfg(**SETTINGS)
        data = synth(SOURCES, 8, 32, 0), synth(SOURCES[:1], 12, 32, 1)
        seed_everything(cfg.seed, cfg.deterministic)
        proto = UniChest(cfg, data[0].classes)
        model = copy.deepcopy(proto)
        ref = Trainer(cfg, "conquer", tmp_path / "ref", progress=False).fit(model, *data)
        deadline = time.time() + 400
        while not marker.exists():
            assert child.poll() is None, "the child run ended before reaching epoch 2"
            assert time.time() < deadline, "the child run did not reach epoch 2 in time"
            time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    # the last completed checkpoint is intact and loadable
    meta = checkpoints.read_meta(out / "last")
    assert meta["extra"]["epoch"] == 1 and meta["extra"]["step"] == cfg.max_steps_per_epoch
    checkpoints.load(out / "last", cfg)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # resume: a fresh process state, the same configuration
    seed_everything(123)  # whatever the global RNG holds now must not matter
    resumed_model = copy.deepcopy(proto)
    resumed = Trainer(cfg, "conquer", out, progress=False).fit(resumed_model, *data, resume=True)
    a, b = model.state_dict(), resumed_model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming"
    cols = ["epoch", "step", "loss", "val_aAUC"]
    assert resumed.history[cols].equals(ref.history[cols])
    assert resumed.best_metric == ref.best_metric
