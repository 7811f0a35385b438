"""DDP on CPU (gloo): two ranks end with identical parameters, and the loss they compute on
their halves equals the single-process loss on the whole global batch (global negatives)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unichest_lib.training import distributed
from unichest_lib.training.trainer import Trainer

from helpers import SOURCES, synth, tiny_cfg

STEPS, GLOBAL = 3, 8


SIZE = 64  # 2 x 2 patches: at 32 px the single key makes the cross-attention query weights'
           # true gradient zero, and AdamW turns its rounding noise into lr-sized updates


def _cfg():
    # Divide stage: the encoders are frozen (batch norm in eval mode), so per-rank batch-norm
    # statistics cannot make the ranks differ from one process; dropout off for the same reason.
    return tiny_cfg(batch_size=GLOBAL, dropout=0.0, deterministic=False, image_size=SIZE)


def _data():
    return synth(SOURCES, 8, SIZE, 0), synth(SOURCES[:1], 12, SIZE, 1)


def _global_batches(data):
    from unichest_lib.data import collate

    ds = data[0]
    return [collate([ds[(s * GLOBAL + i) % len(ds)] for i in range(GLOBAL)]) for s in range(STEPS)]


def _divide_trainer(data, out):
    from unichest_lib.model import UniChest

    torch.manual_seed(0)
    model = UniChest(_cfg(), data[0].classes).start_divide()
    return Trainer(_cfg(), "divide", out, progress=False).bind(model, *data)


def _run(trainer, batches, rows):
    losses = []
    for b in batches:
        part = {k: (v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in range(len(v))][rows])
                for k, v in b.items()}
        losses.append(trainer.train_step(part)["loss"])
    return losses


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        data = _data()
        trainer = _divide_trainer(data, os.path.join(out, f"r{rank}"))
        assert isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel)
        n = GLOBAL // world
        losses = _run(trainer, _global_batches(data), slice(rank * n, (rank + 1) * n))
        params = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
        torch.save({"losses": losses, "params": params}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gather_with_grad_is_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x and distributed.world_size() == 1


@pytest.mark.slow
def test_two_gloo_ranks_match_each_other_and_the_single_process_run(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), f"ranks disagree on {k}"
    assert r0["losses"] == r1["losses"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers; restored so later tests see the default
    try:
        data = _data()
        single = _divide_trainer(data, tmp_path / "single")
        losses = _run(single, _global_batches(data), slice(0, GLOBAL))
    finally:
        torch.set_num_threads(threads)
    assert r0["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-6)
    params = dict(single.model.named_parameters())
    for k, v in r0["params"].items():
        torch.testing.assert_close(v, params[k].detach(), rtol=1e-4, atol=1e-5, msg=k)
