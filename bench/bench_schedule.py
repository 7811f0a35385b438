"""How long Conquer must train: the measurement behind a profile's ``conquer_epochs``.

    .venv/bin/python bench/bench_schedule.py --epochs 8 12 16 --seeds 100 101 102 --record

For every schedule length E and training seed, Conquer trains for E epochs (one warm-up +
cosine schedule over the E epochs, as the profile would), selects its best epoch on the
validation split of ``val_source`` and records, per epoch, that validation aAUC and the mean
over the validation splits of all pre-training sources (less noisy; never used for selection).
Each run's summary adds the best checkpoint's mean in-domain *test* aAUC for the record only:
the decision reads the validation numbers alone.

**The rule** (:mod:`unichest_lib.evidence.schedule`, printed at the end): the plateau is the
shortest E whose mean over seeds of the all-source validation aAUC at the selected epoch lies
within ``--tolerance`` (0.005 aAUC, about half the epoch-to-epoch noise of one run at
tutorial) of the best E's mean. Seeds 100+ are used by no chapter. With ``--record`` each
finished run is added to the recorded study ``results/<profile>/schedule/`` (with its
provenance, :mod:`unichest_lib.evidence.record`) that chapter 02 shows; runs already there
are skipped, so an interrupted study resumes. Runs train in a temporary folder and are not
stored.
About 16 s per Conquer epoch at tutorial on a 2-core AVX512-BF16 EPYC.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import pandas as pd

from unichest_lib import config, hardware
from unichest_lib.evaluation import classification
from unichest_lib.evidence import record
from unichest_lib.evidence.schedule import FREE, STUDY, TOLERANCE, summary
from unichest_lib.training import checkpoints, stages
from unichest_lib.training.trainer import EpochMetrics


def mean_aauc(model, cfg, split: str) -> float:
    """Mean over the pre-training sources of the macro aAUC on ``split``."""
    df = classification.in_domain(model, cfg, split=split)
    return float(df[(df["class"] == "macro") & (df["metric"] == "aAUC")]["value"].mean())


def one_run(base, epochs: int, seed: int) -> tuple[dict, pd.DataFrame]:
    cfg = base.replace(conquer_epochs=epochs, seed=seed)

    def hook(model, epoch):
        return {"val_all_aAUC": mean_aauc(model, cfg, "valid")}

    with tempfile.TemporaryDirectory(prefix="unichest-schedule-") as tmp:
        t0 = time.perf_counter()
        r = stages.conquer(cfg, f"{tmp}/conquer", progress=False,
                          callbacks=[EpochMetrics(hook)])
        seconds = time.perf_counter() - t0
        test = mean_aauc(checkpoints.load(r.checkpoint, cfg), cfg, "test")
    h = r.history
    curve = h[h["split"] == "valid"][["epoch", "val_aAUC", "val_all_aAUC"]].copy()
    best = curve.loc[curve["val_aAUC"].idxmax()]  # the first best epoch, as the trainer keeps
    curve.insert(0, "epochs", epochs)
    curve.insert(1, "seed", seed)
    run = dict(epochs=epochs, seed=seed, best_epoch=int(best["epoch"]),
               val_aAUC=float(best["val_aAUC"]), val_all_aAUC=float(best["val_all_aAUC"]),
               test_all_aAUC=test, seconds=round(seconds, 1),
               commit=hardware.git_commit()[:12])  # a resumed study may span commits
    return run, curve


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--epochs", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    ap.add_argument("--record", action="store_true",
                    help="write each finished run into results/<profile>/schedule/")
    args = ap.parse_args(argv)
    base = config.resolve(args.profile)
    old = record.read(args.profile, STUDY) if args.record else None
    keep = old is not None and old.status in ("fresh", "stale")
    runs = old.tables["runs"] if keep else pd.DataFrame()
    if keep and "commit" not in runs:  # runs recorded before the column: the record's commit
        runs["commit"] = str(old.provenance.get("commit", "unknown"))[:12]
    curves = old.tables["curves"] if keep else pd.DataFrame()
    command = "python bench/bench_schedule.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for e in args.epochs:
        for seed in args.seeds:
            if len(runs) and ((runs["epochs"] == e) & (runs["seed"] == seed)).any():
                continue
            run, curve = one_run(base, e, seed)
            print(run, flush=True)
            runs = pd.concat([runs, pd.DataFrame([run])], ignore_index=True)
            curves = pd.concat([curves, curve], ignore_index=True)
            if args.record:  # one run at a time: an interrupted study keeps what it finished
                record.write(args.profile, STUDY, dict(runs=runs, curves=curves), dict(
                    hardware.provenance(base.amp), command=command, tolerance=args.tolerance,
                    train_seconds=float(runs["seconds"].sum())), cfg=base, free=FREE)
    s, chosen = summary(runs[runs["epochs"].isin(args.epochs)], args.tolerance)
    print(f"\nprofile {args.profile}: Conquer schedules over seeds {args.seeds}")
    print(s.round(4).to_string(index=False))
    print(f"\nthe rule chooses conquer_epochs = {chosen}")


if __name__ == "__main__":
    main()
