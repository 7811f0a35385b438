"""Re-measure one recorded study live and rewrite its part of ``results/<profile>/``.

    make ledger STUDY=list                    # the studies and what each costs
    make ledger STUDY=03_divide               # one chapter's evidence, live, recorded
    make ledger STUDY=schedule PROFILE=tutorial
    python bench/ledger.py 04_evaluate --yaml "grounding_strides: []"   # chapter parameters

A chapter study executes that chapter with every study of it switched on
(``full_ledger=True``), every score measured live (``UNICHEST_EVIDENCE=live``: runs missing
from the artifact store are trained) and written to the record (``UNICHEST_RECORD=1``):
only the (variant, seed, split) scores the chapter reads are rewritten, each with its
provenance. ``schedule`` runs ``bench/bench_schedule.py --record``. The executed chapter is
kept in ``_build/ledger/``. A run that is interrupted keeps every score it finished.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: study -> (what it measures, its cost at tutorial on 2 cores as measured in bench/README.md)
STUDIES = {
    "schedule": ("Conquer for 8, 12 and 16 epochs over 3 seeds (chapter 02)",
                 "108 Conquer epochs; see bench/README.md"),
    "02_conquer": ("multi- vs single-source Conquer; the L_BCL alignment study",
                   "the chapter 9 min with bf16, the alignment study 66 min in float32"),
    "03_divide": ("UniChest vs Conquer and its compute-matched continuation; the headroom",
                  "6.6 min with bf16 once 02 is stored"),
    "04_evaluate": ("in-domain, zero-shot, grounding (against its baselines, its diagnosis, "
                    "output strides 16 and 8), transfer; the query-text study",
                    "2.5 min with bf16 once 03 is stored; the query-text and stride studies "
                    "(a Conquer and a Divide per value and seed) not yet timed"),
    "05_ablations": ("K = 1, no L_SCL, equal weights; the λ × K grid, reports vs labels, "
                     "heterogeneity and the world dials",
                     "grid, reports and heterogeneity 35 min with bf16; each dial world "
                     "about 35 min in float32"),
    "06_baselines": ("MedKLIP-, MGCA- and CLIP-style baselines; per-class views (Figs. 4-6) "
                     "and Table I (one-source model fine-tuned on ChestX-ray14)",
                     "30 min with bf16, 79 min in float32; Table I adds about 2.6 min of "
                     "fine-tuning per seed"),
    "07_claims": ("the claims ledger (reads what the studies above measured)", "seconds"),
}


def chapter(stem: str, profile: str, yaml: str | None = None) -> int:
    out = ROOT / "_build" / "ledger"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, UNICHEST_EVIDENCE="live", UNICHEST_RECORD="1", UNICHEST_PROGRESS="0",
               UNICHEST_RECORD_COMMAND=f"make ledger STUDY={stem} PROFILE={profile}")
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{stem}.ipynb"),
           str(out / f"{stem}.ipynb"), "-p", "profile", profile, "--cwd", str(ROOT / "notebooks")]
    if stem not in ("03_divide",) and "full_ledger" not in (yaml or ""):
        cmd += ["-p", "full_ledger", "True"]  # chapter 03's studies always run
    if yaml:  # more of the chapter's parameters, as YAML (papermill -y)
        cmd += ["-y", yaml]
    return subprocess.call(cmd, env=env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="a study name, or 'list'")
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--yaml", default=None,
                    help='more chapter parameters as YAML, e.g. "grounding_strides: []"')
    args = ap.parse_args(argv)
    if args.study == "list":
        for name, (what, cost) in STUDIES.items():
            print(f"{name:14s} {what}; {cost}")
        return 0
    if args.study not in STUDIES:
        print(f"ledger: unknown study {args.study!r}; choose one of {', '.join(STUDIES)} "
              "(make ledger STUDY=list describes them)", file=sys.stderr)
        return 2
    t0 = time.time()
    if args.study == "schedule":
        rc = subprocess.call([sys.executable, str(ROOT / "bench" / "bench_schedule.py"),
                              "--profile", args.profile, "--record"])
    else:
        rc = chapter(args.study, args.profile, args.yaml)
    print(f"ledger: {args.study} at {args.profile} finished in {time.time() - t0:.0f} s, rc {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
