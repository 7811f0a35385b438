"""Run the benchmark suite, one table per script, and keep each script's output in a folder.

    .venv/bin/python bench/run_all.py                   # quick set (minutes on 2 cores)
    .venv/bin/python bench/run_all.py --full            # + paper shapes, bf16 steps, the book
    .venv/bin/python bench/run_all.py --only losses,mfu --out bench_results

Each script runs in its own process (so one failing does not stop the rest); its output is
printed and written to ``<out>/<name>.txt``. The summary gives wall time and exit code per
script. See bench/README.md for what each table means and the targets of issue #8.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (arguments of the quick run, arguments of the --full run)
SUITE = {
    "losses": ([], []),
    "augment": ([], []),
    "model_experts": ([], ["--profile", "paper", "--batch", "4"]),
    "optimizer": ([], []),
    "render": (["--n", "256"], []),
    "report_filter": (["--n", "200"], []),
    "train_step": (["--profiles", "tutorial", "--amps", "fp32", "--steps", "2", "--threads", "1"],
                   ["--threads", "1"]),
    "mfu": (["--amps", "fp32", "--steps", "2", "--threads", "1"],
            ["--profiles", "tutorial,paper", "--amps", "fp32,bf16", "--tutorial-batch", "32",
             "--paper-batch", "4", "--steps", "3", "--channels-last", "--matmul", "2048"]),
    "bf16_curve": (["--profile", "smoke", "--epochs", "1"], []),
    "evaluate": (["--untrained"], []),
    "output_stride": (["--steps", "1", "--threads", "1"], ["--steps", "3"]),
    "book": (None, []),  # None: only with --full
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the long settings and the book build")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(SUITE))
    ap.add_argument("--out", default="bench_results", help="folder for the per-script outputs")
    args = ap.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else SUITE) if n]
    unknown = sorted(set(names) - set(SUITE))
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {unknown}; choose from {sorted(SUITE)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parent)}
    summary = []
    for name in names:
        quick, full = SUITE[name]
        extra = full if args.full else quick
        if extra is None:
            continue
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *extra]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        sec = time.perf_counter() - t
        print(res.stdout + (res.stderr[-3000:] if res.returncode else ""), flush=True)
        tmp = out / f".{name}.txt.tmp"
        tmp.write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
        os.replace(tmp, out / f"{name}.txt")
        summary.append((name, sec, res.returncode))
    print(f"\n{'benchmark':16} {'wall s':>8} {'rc':>3}")
    for name, sec, rc in summary:
        print(f"{name:16} {sec:8.1f} {rc:3d}")
    return int(any(rc for _, _, rc in summary))


if __name__ == "__main__":
    raise SystemExit(main())
