"""Benchmark: evaluation of a `tutorial` model on every embedded test source.

Runs in-domain (Table IV: the 4 pre-training sources), zero-shot by name (Table V: shenzhen,
openi, siim, padchest) and grounding (chestxdet10) and prints wall time, images per second
and peak resident memory. Target (issue #6): under one minute on 2 CPU cores.

The model is the trained Divide checkpoint of the artifact store when it exists; otherwise
(or with --untrained) a freshly initialised model in the Divide stage with the same shapes,
which costs exactly the same to evaluate. --train trains it through the store first.

Datasets are built (and rendered into the world's cache) before the clock starts; the
"data" line reports that time separately, and the timed part re-reads the cached images.

    .venv/bin/python bench/bench_evaluate.py [--profile tutorial] [--threads N] [--untrained|--train]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from unichest_lib.config import resolve
from unichest_lib.data import make_dataset
from unichest_lib.data.label_spaces import union_classes
from unichest_lib.evaluation import classification as evaluate
from unichest_lib.evaluation.grounding import grounding_table
from unichest_lib.training import store


def _model(cfg, untrained: bool, train: bool):
    if train or (not untrained and store.is_valid(cfg, "divide")):
        return store.load_model(cfg, "divide"), "trained (store)"
    from unichest_lib.model import UniChest

    return UniChest(cfg, union_classes(cfg.sources, cfg.data)).start_divide().eval(), "untrained"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    ap.add_argument("--untrained", action="store_true")
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--cache-dir", default=None, help="cache_dir holding the trained store")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args.profile, cache_dir=args.cache_dir)
    zs_sources = tuple(s for s in cfg.downstream if s != "chestxdet10")

    t0 = time.perf_counter()
    n_images = 0
    for src in cfg.sources + zs_sources:
        n_images += len(make_dataset(cfg, [src], "test"))
    n_images += len(make_dataset(cfg, ["chestxdet10"], "test", with_masks=True))
    t_data = time.perf_counter() - t0
    model, kind = _model(cfg, args.untrained, args.train)

    times = {}
    t = time.perf_counter()
    ind = evaluate.in_domain(model, cfg)
    times["in_domain"] = time.perf_counter() - t
    t = time.perf_counter()
    zs = evaluate.zero_shot(model, cfg, zs_sources, by="name")
    times["zero_shot"] = time.perf_counter() - t
    t = time.perf_counter()
    gr = grounding_table(model, cfg, "chestxdet10")
    times["grounding"] = time.perf_counter() - t
    total = sum(times.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"profile={cfg.profile} model={kind} stage={model.stage} K={cfg.K} "
          f"image_size={cfg.image_size} backbone={cfg.backbone} torch_threads={torch.get_num_threads()}")
    print(f"data (build/render test sets, untimed below): {t_data:.1f} s")
    for k, v in times.items():
        print(f"{k:>10}: {v:6.1f} s")
    print(f"total evaluation wall time: {total:.1f} s for {n_images} test images "
          f"({n_images / total:.1f} images/s); peak RSS {peak_mb:.0f} MiB")
    macro = lambda df, m: df[(df["class"] == "macro") & (df["metric"] == m)]  # noqa: E731
    print(macro(ind, "aAUC")[["source", "value"]].to_string(index=False))
    print(macro(zs, "aAUC")[["source", "value"]].to_string(index=False))
    print(macro(gr, "pointing_game")[["source", "value"]].to_string(index=False))


if __name__ == "__main__":
    main()
