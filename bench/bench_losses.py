"""Loss kernels: vectorised L_SCL, L_BCL and ASL vs naive per-pair / per-sample loops.

    .venv/bin/python bench/bench_losses.py [--batches 32 128 512] [--repeat 20]

Prints one table: kernel, batch, input shapes, dtype, naive ms, vectorised ms, speed-up and
the max abs difference of the two results (forward pass only). The naive versions are the
straightforward loops a first implementation would write (the official code's L_SCL is such a
double loop). Timings on a shared CPU are noisy. The script runs with ONE intra-op thread by
default (``--threads``): on a loaded machine a second OpenMP thread spends most of its time
waiting for a core, which made medians 50-100x worse than the single-thread ones.
"""

from __future__ import annotations

import argparse
import time

import torch

from unichest_lib.training import losses as L


# ---- naive references ---------------------------------------------------------------------
def naive_scl(z, src, tau=1.0):
    """Eq. 6, one pair at a time."""
    z = z / z.norm(dim=1, keepdim=True)
    m, total, n = z.shape[0], 0.0, 0
    for i in range(m):
        num, den = 0.0, 0.0
        for j in range(m):
            if j == i:
                continue
            e = torch.exp(torch.dot(z[i], z[j]) / tau)
            den = den + e
            if src[j] == src[i]:
                num = num + e
        if isinstance(num, torch.Tensor):
            total = total - torch.log(num / den)
            n += 1
    return total / max(n, 1)


def naive_bcl(img, txt, tau=1.0):
    """Eq. 3, one sample at a time."""
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(img.shape[0]):
        row = txt @ img[i] / tau
        col = img @ txt[i] / tau
        total = total - torch.log_softmax(row, 0)[i] - torch.log_softmax(col, 0)[i]
    return total / img.shape[0]


def naive_asl(x, y, mask, gn=6.0, gp=0.0, clip=0.05, eps=1e-8):
    """ASL, one sample at a time, mean over observed elements."""
    total, n = 0.0, 0
    for i in range(x.shape[0]):
        p = torch.sigmoid(x[i])
        pm = (p - clip).clamp(min=0)
        pos = -((1 - p) ** gp) * torch.log(p.clamp(min=eps))
        neg = -(pm ** gn) * torch.log((1 - pm).clamp(min=eps))
        el = torch.where(y[i] > 0.5, pos, neg)
        total = total + el[mask[i]].sum()
        n += int(mask[i].sum())
    return total / max(n, 1)


# ---- timing -------------------------------------------------------------------------------
def timed(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2], fn()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--classes", type=int, default=60, help="c for ASL (official union: 60)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--dim", type=int, default=768, help="d for L_BCL (paper: 768)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, forward pass only")
    head = f"{'kernel':8} {'batch':>5} {'shapes':28} {'dtype':8} {'naive ms':>10} {'vect. ms':>9} {'speed-up':>9} {'max|diff|':>10}"
    print(head)
    print("-" * len(head))
    for m in args.batches:
        z = torch.randn(m, 32, generator=g)
        src = torch.randint(0, 4, (m,), generator=g)
        img, txt = torch.randn(m, args.dim, generator=g), torch.randn(m, args.dim, generator=g)
        x = 3 * torch.randn(m, args.classes, generator=g)
        y = (torch.rand(m, args.classes, generator=g) < 0.2).float()
        mask = torch.rand(m, args.classes, generator=g) < 0.6
        cases = [
            ("L_SCL", f"z {tuple(z.shape)}", lambda: naive_scl(z, src), lambda: L.scl_loss(z, src)),
            ("L_BCL", f"I,T {tuple(img.shape)}", lambda: naive_bcl(img, txt), lambda: L.bcl_loss(img, txt)),
            ("ASL", f"x {tuple(x.shape)}", lambda: naive_asl(x, y, mask), lambda: L.asl_loss(x, y, mask)),
        ]
        for name, shapes, naive, fast in cases:
            rep_naive = 1 if (name == "L_SCL" and m > 128) else max(1, args.repeat // 5)
            t_naive, v_naive = timed(naive, rep_naive)
            t_fast, v_fast = timed(fast, args.repeat)
            diff = abs(float(v_naive) - float(v_fast))
            print(f"{name:8} {m:>5} {shapes:28} {'float32':8} {t_naive:>10.2f} {t_fast:>9.3f} "
                  f"{t_naive / t_fast:>8.0f}x {diff:>10.2e}")


if __name__ == "__main__":
    main()
