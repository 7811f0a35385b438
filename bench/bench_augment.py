"""Fourier amplitude mixup: one batched rfft2 vs the per-sample loop of the official code.

    .venv/bin/python bench/bench_augment.py [--sizes 128 512] [--batch 32] [--repeat 10]

Prints one table: image size, batch shape, dtype, naive ms (per-image full-spectrum fft2 in a
Python loop), batched ms (:func:`unichest_lib.training.augment.fourier_amplitude_mixup`, p = 1),
speed-up and max abs difference. Runs with one intra-op thread by default (``--threads``) so
that numbers on a shared, loaded CPU are stable; see bench_losses.py.
"""

from __future__ import annotations

import argparse
import time

import torch

from unichest_lib.training.augment import BatchTransform, fourier_amplitude_mixup


def naive_mixup(x, lam, partner):
    """One image at a time, full complex spectrum (fft2), as a first implementation would."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        fa, fb = torch.fft.fft2(x[i, 0]), torch.fft.fft2(x[partner[i], 0])
        amp = lam[i] * fa.abs() + (1 - lam[i]) * fb.abs()
        out[i, 0] = torch.fft.ifft2(torch.polar(amp, fa.angle())).real.clamp(0, 1)
    return out


def timed(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2], r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    head = f"{'op':14} {'batch shape':20} {'dtype':8} {'naive ms':>9} {'batched ms':>10} {'speed-up':>9} {'max|diff|':>10}"
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        x = torch.rand(args.batch, 1, size, size, generator=g)
        lam = torch.rand(args.batch, generator=g)
        partner = torch.randperm(args.batch, generator=g)
        t_naive, ref = timed(lambda: naive_mixup(x, lam, partner), max(1, args.repeat // 3))
        t_fast, out = timed(lambda: fourier_amplitude_mixup(x, 1.0, g, lam=lam, partner=partner),
                            args.repeat)
        diff = (ref - out).abs().max().item()
        print(f"{'fourier mixup':14} {str(tuple(x.shape)):20} {'float32':8} {t_naive:>9.1f} "
              f"{t_fast:>10.1f} {t_naive / t_fast:>8.1f}x {diff:>10.1e}")
        t_tr, _ = timed(lambda: BatchTransform()(x, g), args.repeat)
        print(f"{'crop/flip/jit':14} {str(tuple(x.shape)):20} {'float32':8} {'-':>9} {t_tr:>10.1f} "
              f"{'-':>9} {'-':>10}")


if __name__ == "__main__":
    main()
