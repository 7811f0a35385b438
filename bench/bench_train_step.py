"""Images per second of one Conquer step (Eq. 4) and one Divide step (Eq. 7).

Runs :meth:`unichest_lib.training.trainer.Trainer.train_step` (augmentation, forward, loss, backward,
AdamW, schedule) on random images at the ``tutorial`` and ``paper`` shapes, fp32 vs bf16
autocast, channels-last on/off, and prints a table. The Divide step should cost clearly less:
its encoders are frozen (no backward through them) and its class queries are cached.

    .venv/bin/python bench/bench_train_step.py                       # both profiles
    .venv/bin/python bench/bench_train_step.py --profiles tutorial --steps 5
    .venv/bin/python bench/bench_train_step.py --paper-batch 32 --device cuda
    .venv/bin/python bench/bench_train_step.py --profiles tutorial --amps fp32 --channels-last on

bf16 autocast is *forced* here (the library enables it only where bf16 is native, see
unichest_lib.hardware): on CPUs without AVX512-BF16/AMX the bf16 rows measure PyTorch's
emulation (very slow); measure it there with few steps.

On a CPU the paper shape uses a smaller batch by default (``--paper-batch``); the table says
what was used. ``--threads N`` calls ``torch.set_num_threads(N)`` (default: leave torch's).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unichest_lib import hardware  # noqa: E402
from unichest_lib.config import resolve  # noqa: E402
from unichest_lib.data import collate  # noqa: E402
from unichest_lib.data.label_spaces import observed_mask, union_classes  # noqa: E402
from unichest_lib.data.samples import MultiSourceDataset, SampleTable, labels_to_text  # noqa: E402
from unichest_lib.training import distributed  # noqa: E402
from unichest_lib.training.trainer import Trainer  # noqa: E402


def random_dataset(sources, n, size, seed=0) -> MultiSourceDataset:
    classes = union_classes(sources, "embedded")
    rng = np.random.default_rng(seed)
    src = np.arange(n) % len(sources)
    mask = np.stack([observed_mask(s, classes, "embedded") for s in sources])[src]
    y = (rng.random((n, len(classes))) < 0.2).astype(np.float32)
    y[~mask] = np.nan
    texts = [labels_to_text(np.nan_to_num(y[i]), mask[i], classes) for i in range(n)]
    imgs = (rng.random((n, size, size)) * 255).astype(np.uint8)
    table = SampleTable(tuple(classes), tuple(sources), y, src.astype(np.int64),
                        np.array([str(i) for i in range(n)], dtype=object), texts)
    return MultiSourceDataset(table, lambda i: imgs[i], name="random")


def set_channels_last(model, on: bool) -> None:
    enc = model.image_encoder
    enc.channels_last = on
    enc.to(memory_format=torch.channels_last if on else torch.contiguous_format)


@contextlib.contextmanager
def forced_bf16(on: bool):
    """Make the library's autocast switch ignore whether bf16 is native (benchmark only)."""
    orig = hardware.amp_enabled
    if on:
        hardware.amp_enabled = lambda amp, device: bool(amp)
    try:
        yield
    finally:
        hardware.amp_enabled = orig


def time_steps(trainer, batch, steps: int) -> float:
    trainer.train_step(batch)  # warm-up (allocations, text cache)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def bench_profile(profile: str, batch: int, steps: int, device: str, out_dir: str,
                  amps=("fp32", "bf16"), layouts=(False, True)) -> list[dict]:
    from unichest_lib.model import UniChest

    cfg = resolve(profile, batch_size=batch, device=device, num_workers=0, max_steps_per_epoch=0)
    data = random_dataset(cfg.sources, batch * 2, cfg.image_size)
    val = random_dataset((cfg.val_source,), batch, cfg.image_size, seed=1)
    batch_items = collate([data[i] for i in range(batch)])
    proto = UniChest(cfg, data.classes)
    rows = []
    for stage in ("conquer", "divide"):
        for amp in [a == "bf16" for a in amps]:
            for cl in layouts:
                c = cfg.replace(amp=amp, channels_last=cl)
                model = copy.deepcopy(proto)
                if stage == "divide":
                    model.start_divide()
                set_channels_last(model, cl)
                trainer = Trainer(c, stage, out_dir, progress=False).bind(model, data, val)
                trainer._warm_text_cache()
                with forced_bf16(amp):
                    sec = time_steps(trainer, batch_items, steps)
                rows.append(dict(profile=profile, stage=stage, amp="bf16" if amp else "fp32",
                                 channels_last=cl, batch=batch, image=cfg.image_size,
                                 backbone=cfg.backbone, d=cfg.embed_dim, K=cfg.K,
                                 sec_per_step=sec, images_per_s=batch / sec))
                print(f"  {profile:8s} {stage:7s} {rows[-1]['amp']} cl={cl!s:5s} "
                      f"{sec:7.3f} s/step  {batch / sec:7.2f} img/s", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="tutorial,paper")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting (after 1 warm-up)")
    p.add_argument("--tutorial-batch", type=int, default=32)
    p.add_argument("--paper-batch", type=int, default=None,
                   help="paper-shape batch (default: 32 on CUDA, 4 on CPU)")
    p.add_argument("--amps", default="fp32,bf16", help="fp32 and/or bf16 autocast")
    p.add_argument("--channels-last", default="off,on", help="off and/or on")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = distributed.resolve_device(args.device)
    paper_batch = args.paper_batch or (32 if dev.type == "cuda" else 4)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} timed steps per setting")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for prof in args.profiles.split(","):
            batch = args.tutorial_batch if prof == "tutorial" else paper_batch
            rows += bench_profile(prof, batch, args.steps, str(dev), out,
                                  amps=args.amps.split(","),
                                  layouts=[v == "on" for v in args.channels_last.split(",")])
    import pandas as pd

    df = pd.DataFrame(rows)
    print("\n" + df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    best = df.groupby(["profile", "stage"]).images_per_s.max().unstack()
    best["divide/conquer speed-up"] = best["divide"] / best["conquer"]
    print("\nbest images/s per stage\n" + best.to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
