"""Rendering speed of the embedded world: images / second / core.

    .venv/bin/python bench/bench_render.py [--size 128] [--n 1024] [--source chexpert]

Renders ``n`` images of one source in chunks (no disk cache) with ``torch`` and numpy held to
one thread, and reports both CPU-time throughput (images per second per core: the honest
number on a shared machine) and wall-clock throughput. The population (labels, layout) is
drawn before timing starts.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from unichest_lib.config import resolve  # noqa: E402
from unichest_lib.data.world import CHUNK, World  # noqa: E402
from unichest_lib.data.world.render import render_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--source", default="chexpert")
    ap.add_argument("--chunk", type=int, default=CHUNK)
    args = ap.parse_args()
    cfg = resolve("tutorial", image_size=args.size, n_per_source=args.n, n_downstream=args.n)
    w = World(cfg)
    pop, spec = w.population(args.source), w.spec(args.source)
    render_rows(pop, np.arange(8), spec, args.size, np.random.default_rng(0))  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(0, args.n, args.chunk):
        rows = np.arange(k, min(k + args.chunk, args.n))
        render_rows(pop, rows, spec, args.size, np.random.default_rng(k))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"source={args.source} size={args.size}px n={args.n} chunk={args.chunk} "
          f"findings/image={pop.truth.sum(1).mean():.2f}")
    print(f"{args.n / cpu:.0f} images/second/core (CPU time {cpu:.2f} s); "
          f"{args.n / wall:.0f} images/second wall-clock ({wall:.2f} s; machine shared, noisy)")


if __name__ == "__main__":
    main()
