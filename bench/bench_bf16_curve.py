"""Does bf16 autocast train the same model? A short Conquer run in fp32 and in bf16, with the
run-to-run noise of fp32 (another seed) as the yardstick.

    .venv/bin/python bench/bench_bf16_curve.py                 # tutorial, 2 epochs
    .venv/bin/python bench/bench_bf16_curve.py --epochs 1 --steps 10 --profile smoke

Three Conquer runs (Eq. 4) on the embedded world at ``--profile``: fp32 with seed 0, fp32
with seed 1, bf16 autocast with seed 0 (forced, as in bench_train_step.py, so a CPU without
native bf16 measures emulation). The training losses are smoothed with a moving average of
``--window`` steps; the table gives the mean and max absolute difference of each curve from
the fp32 seed-0 curve, the last smoothed loss, the best validation aAUC and the wall time of
the run (data loading, augmentation, validation and checkpoints included). bf16 counts as
"within noise" when its mean difference from fp32 is no larger than that of another fp32 seed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_train_step import forced_bf16  # noqa: E402

from unichest_lib import hardware  # noqa: E402
from unichest_lib.training import stages  # noqa: E402
from unichest_lib.config import resolve  # noqa: E402


def run(cfg, bf16: bool, out_dir: str):
    t = time.perf_counter()
    with forced_bf16(bf16):
        res = stages.conquer(cfg.replace(amp=bf16), out_dir, progress=False)
    sec = time.perf_counter() - t
    h = res.history[res.history.split == "train"]
    return h["loss"].to_numpy(), res.best_metric, sec


def smooth(x: np.ndarray, w: int) -> np.ndarray:
    return np.convolve(x, np.ones(w) / w, mode="valid") if len(x) >= w else x


def main(argv=None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="cap on steps per epoch (0: full)")
    ap.add_argument("--window", type=int, default=5, help="moving-average window (steps)")
    ap.add_argument("--cache-dir", default=None, help="world cache (default: the profile's)")
    args = ap.parse_args(argv)
    over = dict(conquer_epochs=args.epochs, max_steps_per_epoch=args.steps, device="cpu")
    if args.cache_dir:
        over["cache_dir"] = args.cache_dir
    base = resolve(args.profile, **over)
    print(f"profile {args.profile}: batch {base.batch_size}, {base.image_size} px, "
          f"{base.backbone}; native bf16 on this CPU: {hardware.cpu_has_native_bf16()}", flush=True)
    stages._datasets(base)  # render / load the world first: no run's time includes it
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed, bf16 in (("fp32 seed 0", 0, False), ("fp32 seed 1", 1, False),
                                 ("bf16 seed 0", 0, True)):
            runs[name] = run(base.replace(seed=seed), bf16, os.path.join(tmp, name.replace(" ", "_")))
            print(f"  {name}: {len(runs[name][0])} steps in {runs[name][2]:.1f} s", flush=True)
    ref = smooth(runs["fp32 seed 0"][0], args.window)
    rows = []
    for name, (loss, best, sec) in runs.items():
        s = smooth(loss, args.window)
        n = min(len(s), len(ref))
        d = np.abs(s[:n] - ref[:n])
        rows.append(dict(run=name, steps=len(loss), loss_dtype="float32",
                         mean_abs_diff=d.mean(), max_abs_diff=d.max(), last_smoothed_loss=s[-1],
                         best_val_aAUC=best, wall_s=sec))
    df = pd.DataFrame(rows)
    print("\n" + df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    seed_noise = df.loc[df.run == "fp32 seed 1", "mean_abs_diff"].item()
    bf16_diff = df.loc[df.run == "bf16 seed 0", "mean_abs_diff"].item()
    print(f"\nbf16 vs fp32 (same seed): mean |diff| {bf16_diff:.4g}; fp32 seed 1 vs seed 0: "
          f"{seed_noise:.4g} -> {'within' if bf16_diff <= seed_noise else 'OUTSIDE'} run-to-run noise")
    print(f"whole-run speed-up bf16/fp32 (same seed): "
          f"{runs['fp32 seed 0'][2] / runs['bf16 seed 0'][2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
