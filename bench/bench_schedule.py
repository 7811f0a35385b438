"""Where the validation curve flattens: the measurement behind the tutorial schedule.

    .venv/bin/python bench/bench_schedule.py                       # tutorial, seed 0
    .venv/bin/python bench/bench_schedule.py --factor 2 --seed 1

Trains Conquer for ``factor`` x the profile's ``conquer_epochs`` (one cosine schedule over the
longer run), then Divide from its best checkpoint for ``factor`` x ``divide_epochs``, and
prints each epoch's validation aAUC: on ``val_source`` (what selects the checkpoint) and the
mean over the validation splits of all pre-training sources (less noisy; never used for
selection). The schedule is long enough where the curve of the longer run has stopped
rising by more than its epoch-to-epoch noise at the profile's epoch count. Runs go to a
temporary folder and are not stored. Minutes on 2 CPU cores at tutorial.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd

from unichest_lib import config
from unichest_lib.evaluation import classification
from unichest_lib.training import stages


def curve(result) -> pd.DataFrame:
    h = result.history
    return h[h["split"] == "valid"][["epoch", "val_aAUC", "val_all_aAUC"]].set_index("epoch")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--factor", type=float, default=2.0, help="run length / profile's epochs")
    args = ap.parse_args(argv)
    base = config.resolve(args.profile, seed=args.seed)
    ce, de = round(base.conquer_epochs * args.factor), round(base.divide_epochs * args.factor)
    cfg = base.replace(conquer_epochs=ce, divide_epochs=de)

    def hook(model, epoch):
        df = classification.in_domain(model, cfg, split="valid")
        m = df[(df["class"] == "macro") & (df["metric"] == "aAUC")]
        return {"val_all_aAUC": float(m["value"].mean())}

    with tempfile.TemporaryDirectory(prefix="unichest-schedule-") as tmp:
        t0 = time.perf_counter()
        c = stages.conquer(cfg, f"{tmp}/conquer", progress=False, eval_hook=hook)
        t1 = time.perf_counter()
        d = stages.divide(cfg, c.checkpoint, f"{tmp}/divide", progress=False, eval_hook=hook)
        t2 = time.perf_counter()
    print(f"profile {args.profile} (its schedule: {base.conquer_epochs} + {base.divide_epochs} "
          f"epochs), seed {args.seed}; this run: {ce} + {de} epochs")
    print(f"\nConquer ({t1 - t0:.0f} s), validation aAUC per epoch:")
    print(curve(c).round(3).T.to_string())
    print(f"\nDivide ({t2 - t1:.0f} s), validation aAUC per epoch:")
    print(curve(d).round(3).T.to_string())


if __name__ == "__main__":
    main()
