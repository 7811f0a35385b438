"""What a finer patch grid costs: the image encoder at output stride 32, 16 and 8 (issue #15).

``cfg.output_stride`` 16 or 8 dilates the last one or two ResNet stages instead of striding
(:mod:`unichest_lib.model.encoders`), so at the ``tutorial`` 128 px the grid the query
networks attend to is 8 x 8 or 16 x 16 instead of 4 x 4. Per stride, at one profile's image
size, backbone and batch size, this prints:

* the grid (h x w) and N = h*w patches;
* forward GFLOPs per image of the image encoder, and of the query networks (QN1 alone, and
  all K of Divide), counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per
  multiply-add). The query networks are counted with their attention weights written out
  (``return_attention``, the same maths as the fused kernel, whose CPU version the counter
  does not see); their part that grows with N is the cross-attention: keys and values of N
  patches and c x N attention scores per layer;
* seconds per step of :meth:`~unichest_lib.training.trainer.Trainer.train_step` (forward,
  loss, backward, AdamW) on random images: a Conquer step (encoder + QN1), and a Divide step
  on stored frozen patches (the K query networks only: the cross-attention growth in time);
* the activations a Conquer forward keeps for its backward (MiB per batch in float32,
  counted with autograd's saved-tensor hooks, each storage once, parameters left out): the
  memory that grows with the grid.

    .venv/bin/python bench/bench_output_stride.py                    # tutorial, 32/16/8
    .venv/bin/python bench/bench_output_stride.py --steps 3 --threads 2
    .venv/bin/python bench/bench_output_stride.py --profile paper --batch 4 --strides 32,16

Timings on a shared CPU are upper bounds; the header names the CPU and the thread count.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_train_step import random_dataset  # noqa: E402

from unichest_lib import hardware  # noqa: E402
from unichest_lib.config import resolve  # noqa: E402
from unichest_lib.data import collate  # noqa: E402
from unichest_lib.model import sincos_2d  # noqa: E402
from unichest_lib.training import distributed, features  # noqa: E402
from unichest_lib.training.trainer import Trainer  # noqa: E402


def gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 1e9


def saved_mib(fn, model) -> float:
    """MiB of the tensors autograd keeps for the backward of ``fn()``, each storage once,
    ``model``'s own parameters left out (they are held anyway)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[(s.data_ptr(), s.device)] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def seconds_per_step(trainer, batch, steps: int) -> float:
    trainer.train_step(batch)  # warm-up: allocations, text cache
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    sync()
    return (time.perf_counter() - t) / steps


def bench_stride(profile: str, stride: int, batch: int, steps: int, device: str, out: str
                 ) -> dict:
    from unichest_lib.model import UniChest

    cfg = resolve(profile, output_stride=stride, batch_size=batch, device=device,
                  num_workers=0, max_steps_per_epoch=0)
    data = random_dataset(cfg.sources, batch, cfg.image_size)
    val = random_dataset((cfg.val_source,), batch, cfg.image_size, seed=1)
    items = collate([data[i] for i in range(batch)])
    model = UniChest(cfg, data.classes).eval()
    one = torch.rand(1, 1, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        patches, grid = model.image_encoder(one)
        queries = model.class_queries()
    pos = sincos_2d(*grid, cfg.embed_dim)
    enc = gflops(lambda: model.image_encoder(one))
    qn1 = gflops(lambda: model.qn1(queries, patches, pos, need_weights=True))
    experts = gflops(lambda: model.experts(queries, patches, pos, need_weights=True))
    conquer = Trainer(cfg, "conquer", out, progress=False).bind(copy.deepcopy(model), data, val)
    conquer._warm_text_cache()
    conquer.model.train()
    mib = saved_mib(lambda: conquer.loss_terms(  # fp32: autocast's weight copies would count
        conquer.model(items["image"], texts=items["text"]), items), conquer.model)
    t_conquer = seconds_per_step(conquer, items, steps)
    divider = copy.deepcopy(model).start_divide()
    feats = features.encode(divider, data, cfg)
    divide = Trainer(cfg, "divide", out, progress=False,
                     callbacks=[features.RunCache(features=feats)]).bind(divider, data, val)
    divide._warm_text_cache()
    t_divide = seconds_per_step(divide, items, steps)
    row = dict(stride=stride, grid=f"{grid[0]}x{grid[1]}", N=grid[0] * grid[1],
               enc_gflop=enc, qn1_gflop=qn1, qn_all_gflop=qn1 + experts,
               attn_entries=len(data.classes) * grid[0] * grid[1],
               conquer_s=t_conquer, divide_feat_s=t_divide, saved_mib=mib)
    print(f"  stride {stride:2d}: grid {row['grid']:>5s}  encoder {enc:6.3f} GFLOP/img  "
          f"conquer {t_conquer:6.2f} s/step  divide {t_divide:6.3f} s/step", flush=True)
    return row


def main(argv=None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--strides", default="32,16,8")
    ap.add_argument("--batch", type=int, default=None, help="default: the profile's batch_size")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per stride (1 warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args.profile)
    batch = args.batch or cfg.batch_size
    dev = distributed.resolve_device(args.device)
    print(f"CPU {hardware.cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {dev}, bf16 autocast "
          f"{hardware.amp_enabled(cfg.amp, dev)} (native bf16: {hardware.native_bf16(dev)})")
    print(f"profile {args.profile}: {cfg.backbone}, {cfg.image_size} px, batch {batch}, "
          f"d {cfg.embed_dim}, {cfg.n_decoder_layers} decoder layers, K {cfg.K}; "
          f"{args.steps} timed steps", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for s in (int(v) for v in args.strides.split(",")):
            rows.append(bench_stride(args.profile, s, batch, args.steps, str(dev), out))
    df = pd.DataFrame(rows)
    base = df.iloc[0]
    ratios = dict(enc_x="enc_gflop", qn_x="qn_all_gflop", conquer_x="conquer_s",
                  divide_x="divide_feat_s", saved_x="saved_mib")
    for name, col in ratios.items():
        df[name] = df[col] / base[col]
    print("\n" + df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\n*_x: relative to stride {int(base.stride)}. GFLOPs are forward, per image; "
          "seconds per step of the batch; saved_mib: activations kept for backward, per batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
