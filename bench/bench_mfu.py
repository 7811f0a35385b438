"""Model FLOP utilisation: each training step's achieved FLOP/s against this machine's matmul.

    .venv/bin/python bench/bench_mfu.py                              # tutorial, fp32 + bf16
    .venv/bin/python bench/bench_mfu.py --profiles tutorial,paper --amps fp32 --paper-batch 2
    .venv/bin/python bench/bench_mfu.py --threads 1 --matmul 1024

Measured in ONE run, so the ratios compare like with like on a shared machine:

1. the machine's dense matmul throughput, fp32 and bf16 (square ``--matmul`` n x n products,
   2 n^3 FLOPs each, median of ``--repeat``);
2. the FLOPs of one Conquer step (Eq. 4) and one Divide step (Eq. 7), counted with fvcore
   exactly as :func:`unichest_lib.evaluation.cost.count_flops` does (forward multiply-adds x 2), with
   the usual rule backward = 2 x forward for the parts that train. Conquer trains the image
   encoder and QN1: 3 x forward. Divide runs the frozen image encoder once (no autograd) and
   trains the K query networks and the gate: encoder x 1 + heads x 3; a Divide step on stored
   frozen patches (``cfg.divide_on_features``, see unichest_lib.training.features) skips the encoder:
   heads x 3. The text encoder is
   not counted (its features are cached per text when its backbone is frozen);
3. the step time of :meth:`unichest_lib.training.trainer.Trainer.train_step` (augmentation, forward,
   loss, backward, AdamW) on random images, fp32 and bf16 autocast. bf16 is *forced* here
   (the library turns it off on CPUs without native bf16, see :mod:`unichest_lib.hardware`),
   so on an AVX2-only CPU the bf16 row measures PyTorch's emulation.

MFU = step FLOPs / step seconds / matmul FLOP/s of the same dtype. Timings on a shared CPU
are noisy; the table prints the thread count used.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_train_step import forced_bf16, random_dataset, set_channels_last  # noqa: E402

from unichest_lib import hardware  # noqa: E402
from unichest_lib.evaluation import cost  # noqa: E402
from unichest_lib.training.trainer import Trainer  # noqa: E402
from unichest_lib.config import resolve  # noqa: E402
from unichest_lib.data import collate  # noqa: E402


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def matmul_flops(n: int, dtype: torch.dtype, repeat: int, device="cpu") -> float:
    """Measured FLOP/s of an (n, n) @ (n, n) product in ``dtype`` (2 n^3 FLOPs)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)

    def mm():
        a @ b
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    return 2 * n ** 3 / median_seconds(mm, repeat)


def step_flops(model, image_size: int, batch: int, *, on_features: bool = False
               ) -> tuple[float, dict]:
    """FLOPs of one training step at the model's current stage (see module docstring);
    ``on_features``: a Divide step on stored frozen patches (no encoder at all)."""
    q = model.class_queries().detach()
    macs, _, by_module = cost.count_flops(model, image_size, q)
    enc = by_module.get("image_encoder", 0)
    heads = macs - enc
    fwd = 2 * macs
    if model.stage == "conquer":
        step = 3 * fwd
    else:
        step = (0 if on_features else 2 * enc) + 3 * 2 * heads
    return batch * step, dict(fwd_gflop_per_image=fwd / 1e9,
                              encoder_share=enc / max(macs, 1))


def bench_profile(profile, batch, steps, amps, channels_last, peak, out_dir):
    from unichest_lib.model import UniChest

    cfg = resolve(profile, batch_size=batch, num_workers=0, max_steps_per_epoch=0,
                  device="cpu", channels_last=channels_last)
    data = random_dataset(cfg.sources, batch * 2, cfg.image_size)
    val = random_dataset((cfg.val_source,), batch, cfg.image_size, seed=1)
    items = collate([data[i] for i in range(batch)])
    proto = UniChest(cfg, data.classes)
    rows = []
    for stage in ("conquer", "divide", "divide_on_features"):
        on_features = stage == "divide_on_features"
        model = copy.deepcopy(proto)
        if stage != "conquer":
            model.start_divide()
        set_channels_last(model, channels_last)
        flops, info = step_flops(model, cfg.image_size, batch, on_features=on_features)
        for amp in amps:
            c = cfg.replace(amp=amp == "bf16", divide_on_features=on_features)
            m = copy.deepcopy(model)
            trainer = Trainer(c, stage.split("_")[0], out_dir, progress=False).bind(m, data, val)
            trainer._warm_text_cache()
            with forced_bf16(amp == "bf16"):
                trainer._encode_features()  # once per run, outside the timed steps
                sec = median_seconds(lambda: trainer.train_step(items), steps)
            achieved = flops / sec
            rows.append(dict(profile=profile, stage=stage, amp=amp, batch=batch,
                             input=f"({batch},1,{cfg.image_size},{cfg.image_size}) float32",
                             backbone=cfg.backbone, K=cfg.K,
                             gflop_per_step=flops / 1e9, sec_per_step=sec,
                             images_per_s=batch / sec, achieved_gflops=achieved / 1e9,
                             mfu_pct=100 * achieved / peak[amp], **info))
            print(f"  {profile} {stage} {amp}: {sec:.3f} s/step, {batch / sec:.1f} img/s, "
                  f"{achieved / 1e9:.1f} GFLOP/s", flush=True)
    return rows


def main(argv=None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="tutorial")
    ap.add_argument("--amps", default="fp32,bf16")
    ap.add_argument("--tutorial-batch", type=int, default=32)
    ap.add_argument("--paper-batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (median; 1 warm-up)")
    ap.add_argument("--matmul", type=int, default=1024, help="n of the n x n matmul probe")
    ap.add_argument("--repeat", type=int, default=10, help="matmul repetitions")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    amps = args.amps.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: "
          f"{hardware.cpu_has_native_bf16()}, channels_last={args.channels_last}")
    peak = {a: matmul_flops(args.matmul, torch.float32 if a == "fp32" else torch.bfloat16,
                            args.repeat) for a in ("fp32", "bf16")}
    print("matmul throughput\n" + pd.DataFrame(
        [dict(op="matmul", shape=f"({args.matmul},{args.matmul})@({args.matmul},{args.matmul})",
              dtype=d, gflops=v / 1e9) for d, v in
         (("float32", peak["fp32"]), ("bfloat16", peak["bf16"]))]).to_string(index=False))
    print(f"bf16/fp32 matmul ratio: {peak['bf16'] / peak['fp32']:.2f}x", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for prof in args.profiles.split(","):
            batch = args.paper_batch if prof == "paper" else args.tutorial_batch
            rows += bench_profile(prof, batch, args.steps, amps, args.channels_last, peak, out)
    df = pd.DataFrame(rows)
    print("\n" + df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if len(amps) > 1 and {"fp32", "bf16"} <= set(amps):
        s = df.pivot_table(index=["profile", "stage"], columns="amp", values="images_per_s")
        s["bf16/fp32"] = s["bf16"] / s["fp32"]
        print("\nbf16 autocast speed-up (target >= 1.8x at tutorial)\n" + s.to_string(float_format=lambda v: f"{v:.3f}"))
    for amp in amps:
        s = df[df.amp == amp].pivot_table(index="profile", columns="stage", values="images_per_s")
        s["divide/conquer"] = s["divide"] / s["conquer"]
        s["on_features/conquer"] = s["divide_on_features"] / s["conquer"]
        print(f"\nDivide vs Conquer images/s ({amp}; target >= 3x at paper; 'on_features' = "
              "cfg.divide_on_features, stored frozen patches, no augmentation in Divide)\n"
              + s.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
