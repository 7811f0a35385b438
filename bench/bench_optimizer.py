"""AdamW step: the per-tensor loop vs foreach vs the fused kernel, on the model's own parameters.

    .venv/bin/python bench/bench_optimizer.py [--profile tutorial] [--repeat 5] [--threads 1]

For the Conquer stage (image encoder + text projection + QN1) and the Divide stage (K query
networks + gate) it prints: number of tensors, parameters, dtype, ms per ``step()`` for each
implementation (median), the speed-up over the loop and the max abs difference of the
parameters after 3 steps from the same start. :func:`unichest_lib.training.optim.make_optimizer` uses
the fused kernel. One intra-op thread by default (the CPU is shared; timings are noisy).
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unichest_lib.data.label_spaces import union_classes  # noqa: E402
from unichest_lib.config import resolve  # noqa: E402
from unichest_lib.model import UniChest  # noqa: E402

VARIANTS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def run(params, kw, repeat):
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    g = torch.Generator().manual_seed(0)
    for p in ps:
        # a gradient with the parameter's strides, as autograd makes it (channels-last convs)
        p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g))
    opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **kw)
    for _ in range(3):
        opt.step()
    after = [p.detach().clone() for p in ps]
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        opt.step()
        ts.append(time.perf_counter() - t)
    return 1000 * sorted(ts)[len(ts) // 2], after


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = resolve(args.profile)
    model = UniChest(cfg, union_classes(cfg.sources, cfg.data))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, profile {args.profile}")
    head = f"{'stage':8} {'tensors':>7} {'params':>10} {'dtype':8} " + " ".join(
        f"{k + ' ms':>10}" for k in VARIANTS) + f" {'fused x':>8} {'max|diff|':>10}"
    print(head + "\n" + "-" * len(head))
    for stage in ("conquer", "divide"):
        m = copy.deepcopy(model)
        if stage == "divide":
            m.start_divide()
        params = m.trainable_parameters()
        res = {k: run(params, kw, args.repeat) for k, kw in VARIANTS.items()}
        diff = max(float((a - b).abs().max()) for a, b in zip(res["loop"][1], res["fused"][1]))
        print(f"{stage:8} {len(params):>7} {sum(p.numel() for p in params):>10} "
              f"{str(params[0].dtype).removeprefix('torch.'):8} "
              + " ".join(f"{res[k][0]:>10.1f}" for k in VARIANTS)
              + f" {res['loop'][0] / res['fused'][0]:>7.1f}x {diff:>10.1e}")


if __name__ == "__main__":
    main()
