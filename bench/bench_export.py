"""Benchmark: the embedded world exported in each real dataset's layout (issue #16).

1. Export time and size per dataset (``python -m unichest_lib.data.world export``'s work) at the
   given profiles, into a temporary folder (deleted afterwards unless --keep).
2. With --train: Conquer and Divide (seed 0, through the artifact store) on the embedded data
   and on the exported data at the first profile, and their numbers side by side: the best
   validation aAUC of each stage and the test aAUC per pre-training source (in-domain) and
   per downstream source (zero-shot by name). Pixels of JPEG (CheXpert, MIMIC-CXR) and the
   min-max scaling of DICOM / 16-bit PNG (VinDr-CXR, SIIM, PadChest) are what can differ.

    .venv/bin/python bench/bench_export.py [--profiles smoke tutorial] [--train] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import pandas as pd

from unichest_lib.config import resolve
from unichest_lib.data.export import export_world
from unichest_lib.evaluation import classification as C
from unichest_lib.training import store


def _numbers(cfg) -> dict:
    for stage in ("conquer", "divide"):  # trains them (seed 0) when the store lacks them
        store.stage_checkpoint(cfg, stage, progress=False)
    out = {"conquer: best valid aAUC": store.manifest(cfg, "conquer")["best_metric"],
           "divide: best valid aAUC": store.manifest(cfg, "divide")["best_metric"]}
    model = store.load_model(cfg, "divide", progress=False)
    t = pd.concat([C.in_domain(model, cfg), C.zero_shot(model, cfg)])
    t = t[(t["class"] == "macro") & (t["metric"] == "aAUC")]
    out.update({f"test aAUC {s}": v for s, v in zip(t["source"], t["value"])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["smoke", "tutorial"])
    ap.add_argument("--train", action="store_true", help="train and compare at the first profile")
    ap.add_argument("--keep", default=None, help="export into this folder and keep it")
    args = ap.parse_args()
    for i, profile in enumerate(args.profiles):
        cfg = resolve(profile)
        out = args.keep if args.keep else tempfile.mkdtemp(prefix=f"unichest-export-{profile}-")
        t0 = time.perf_counter()
        report = export_world(cfg, out, progress=False)
        wall = time.perf_counter() - t0
        print(f"\n== export at {profile}: {wall:.1f} s, {report.table['MB'].sum():.1f} MB, "
              f"{report.table['images'].sum()} images")
        print(report.table.round(2).to_string(index=False))
        if args.train and i == 0:
            t0 = time.perf_counter()
            rows = {"embedded": _numbers(cfg),
                    "exported": _numbers(cfg.replace(data=str(report.data_yml)))}
            side = pd.DataFrame(rows)
            side["exported - embedded"] = side["exported"] - side["embedded"]
            print(f"\n== seed 0 at {profile}, embedded vs exported "
                  f"({time.perf_counter() - t0:.0f} s incl. training)")
            print(side.round(4).to_string())
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
