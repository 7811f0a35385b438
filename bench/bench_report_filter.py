"""Precision / recall of the report filter against the embedded world's ground truth.

    .venv/bin/python bench/bench_report_filter.py [--n 500] [--profile tutorial]

The report generator (unichest_lib.data.world.reports) returns the triplets it wrote. Uncertain
mentions carry position "uncertain" and exists=False in that ground truth, so two scores are
printed: *definite* (uncertain mentions left out on both sides) and *uncertain-as-present*
(the filter's default policy, with the ground truth's uncertain mentions counted as present).
Each line also gives the score restricted to existing findings, which is what report_to_text
feeds to the text encoder. Timing is wall-clock on a shared CPU: noisy.
"""

from __future__ import annotations

import argparse
import time

from unichest_lib.config import resolve
from unichest_lib.data.report_filter import extract, score
from unichest_lib.data.samples import Triplet
from unichest_lib.data.world import World


def corpus(n: int, profile: str):
    world = World(resolve(profile))
    out = []
    for source in ("mimic", "openi"):
        m = min(n // 2, world.size(source))
        out += [world.report(source, i) for i in range(m)]
    return out


def truth(triplets, uncertain: str):
    out = []
    for t in triplets:
        if t.position == "uncertain":
            if uncertain == "drop":
                continue
            t = Triplet(t.entity, "", True)
        out.append(t)
    return out


def evaluate(reports, uncertain: str) -> dict:
    t0 = time.perf_counter()
    pred = [extract(r, uncertain=uncertain) for r, _ in reports]
    dt = time.perf_counter() - t0
    gt = [truth(ts, uncertain) for _, ts in reports]
    all_ = score(pred, gt)
    pos = score([[t for t in p if t.exists] for p in pred], [[t for t in g if t.exists] for g in gt])
    return {"all": all_, "present": pos, "reports_per_s": len(reports) / dt}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--openi", action="store_true",
                    help="also score the real Open-I reports against their MeSH labels")
    args = ap.parse_args(argv)
    reports = corpus(args.n, args.profile)
    print(f"{len(reports)} generated reports (mimic + openi, profile {args.profile})")
    for name, policy in (("definite", "drop"), ("uncertain-as-present", "exists")):
        r = evaluate(reports, policy)
        a, p = r["all"], r["present"]
        print(f"{name:>21}: (entity, exists) P={a['precision']:.3f} R={a['recall']:.3f} "
              f"F1={a['f1']:.3f} | present only P={p['precision']:.3f} R={p['recall']:.3f} "
              f"F1={p['f1']:.3f} | {r['reports_per_s']:.0f} reports/s")
    if args.openi:
        s = openi_real()
        print(f"real Open-I reports vs MeSH labels (present findings): "
              f"P={s['precision']:.3f} R={s['recall']:.3f} F1={s['f1']:.3f} "
              f"(tp={s['tp']} fp={s['fp']} fn={s['fn']})")




def openi_real(limit: int | None = None) -> dict:
    """Present findings the filter reads from the *real* Open-I reports (shipped with
    torchxrayvision) against the MeSH-derived labels of the same reports, per report."""
    import tempfile

    import numpy as np

    from unichest_lib.data import real

    with tempfile.TemporaryDirectory() as empty:
        f = real.load_frame("openi", {"imgpath": empty})
    classes = real.observed_classes("openi")
    y = real.harmonise(f, "openi", classes)
    rows = range(len(f)) if limit is None else range(min(limit, len(f)))
    pred, gt = [], []
    for i in rows:
        found = {t.entity for t in extract(f["report"].iloc[i] or "") if t.exists}
        pred.append([Triplet(c, "", True) for c in classes if c in found])
        gt.append([Triplet(c, "", True) for c, v in zip(classes, y[i]) if v == 1])
    return score(pred, gt)


if __name__ == "__main__":
    main()
