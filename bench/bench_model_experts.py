"""MoE-QN experts: one batched QueryNetworks(K-1) vs a Python loop over K-1 single networks.

    .venv/bin/python bench/bench_model_experts.py [--profile tutorial] [--batch 32]

Forward + backward of the K-1 experts on random patches, at the profile's shapes (d, heads,
FFN, layers, K, image size / 32 patches per side) with ~60 queries (the official union label
space). Prints ms per step for both and their ratio; one intra-op thread by default
(``--threads``) because the CPU is shared (see bench_losses.py).
"""

from __future__ import annotations

import argparse
import time

import torch

from unichest_lib import resolve
from unichest_lib.model import QueryNetworks, sincos_2d


def timed(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * sorted(ts)[len(ts) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = resolve(args.profile)
    side = cfg.image_size // 32
    d, e = cfg.embed_dim, cfg.K - 1
    kw = dict(dim=d, n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim, n_layers=cfg.n_decoder_layers,
              dropout=cfg.dropout)
    stacked = QueryNetworks(e, **kw)
    singles = [QueryNetworks(1, **kw) for _ in range(e)]
    for m in [stacked, *singles]:
        m.reset_parameters()
        m.train()
    q = torch.randn(args.queries, d)
    patches = torch.randn(args.batch, side * side, d)
    pos = sincos_2d(side, side, d)

    def run_stacked():
        stacked(q, patches, pos)[0].sum().backward()

    def run_loop():
        sum(net(q, patches, pos)[0].sum() for net in singles).backward()

    t_s, t_l = timed(run_stacked, args.repeat), timed(run_loop, args.repeat)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, profile {args.profile}: "
          f"K-1 = {e} experts, d = {d}, layers = {cfg.n_decoder_layers}, "
          f"queries = {args.queries}, patches = {side}x{side}, batch = {args.batch}, float32")
    print(f"{'variant':10} {'fwd+bwd ms':>11}")
    print(f"{'loop':10} {t_l:>11.1f}")
    print(f"{'batched':10} {t_s:>11.1f}   ({t_l / t_s:.2f}x)")


if __name__ == "__main__":
    main()
