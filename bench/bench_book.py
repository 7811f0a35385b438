"""Wall time and peak memory of the whole book: every chapter notebook, then the HTML build.

    .venv/bin/python bench/bench_book.py                    # tutorial profile (the target)
    .venv/bin/python bench/bench_book.py --profile smoke    # quick check of the script
    .venv/bin/python bench/bench_book.py --skip-build       # notebooks only
    .venv/bin/python bench/bench_book.py --skip-notebooks --keep /tmp/book   # keep the pages

Step 1 executes each ``notebooks/NN_*.ipynb`` with papermill (a child process per chapter,
``-p profile <profile>``, outputs written to a temporary folder, the checkout untouched).
Step 2 runs ``jupyter-book build book`` with ``UNICHEST_PROFILE=<profile>`` into a temporary
build folder (it executes the notebooks again; the world and checkpoints are reused from
the shared cache that step 1 filled, as in ``make book``).

Peak memory is the largest *sum* of resident set sizes of the child process and all its
descendants (kernels included), polled every ``--poll`` seconds with psutil, so short peaks
between polls can be missed. Targets (issue #8): the whole book at ``tutorial`` under 20
minutes and under 6 GiB. Timings on a shared CPU are noisy; the table prints the CPU load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
_EXECUTED = re.compile(r"(\S+\.(?:ipynb|md)): Executed notebook in ([0-9.]+) seconds")
BIN = Path(sys.executable).parent


def run_measured(cmd: list[str], env: dict, poll: float) -> tuple[float, float, int, str]:
    """Run ``cmd``; return (seconds, peak tree RSS in GiB, exit code, last output lines)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = 0
                for p in tree:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(poll)
        sec = time.perf_counter() - t0
        log.seek(0)
        lines = log.readlines()
    for line in lines:  # jupyter-book (myst-nb) logs each executed notebook's time
        m = _EXECUTED.search(re.sub(r"\x1b\[[0-9;]*m", "", line))  # without colour codes
        if m:
            print(f"    executed {Path(m.group(1)).name}: {float(m.group(2)):.1f} s", flush=True)
    return sec, peak / 2 ** 30, proc.returncode, "".join(lines[-15:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between memory polls")
    ap.add_argument("--skip-build", action="store_true", help="only execute the notebooks")
    ap.add_argument("--skip-notebooks", action="store_true", help="only build the book")
    ap.add_argument("--keep", type=Path, default=None,
                    help="build the book into this folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "UNICHEST_PROFILE": args.profile, "UNICHEST_PROGRESS": "0"}
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    print(f"profile {args.profile}, {psutil.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, {len(notebooks)} notebooks", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_notebooks:
            for nb in notebooks:
                cmd = [str(BIN / "papermill"), str(nb), str(Path(tmp) / nb.name),
                       "-p", "profile", args.profile, "--cwd", str(ROOT), "--no-progress-bar"]
                rows.append(("papermill " + nb.stem, *run_measured(cmd, env, args.poll)))
                print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} s, {rows[-1][2]:.2f} GiB, rc {rows[-1][3]}",
                      flush=True)
        if not args.skip_build:
            build = args.keep.resolve() if args.keep else Path(tmp) / "build"
            cmd = [str(BIN / "jupyter-book"), "build", "book", "--path-output", str(build)]
            rows.append(("jupyter-book build book", *run_measured(cmd, env, args.poll)))
            print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} s, {rows[-1][2]:.2f} GiB, rc {rows[-1][3]}",
                  flush=True)
    failed = [r for r in rows if r[3] != 0]
    print(f"\n{'step':40} {'wall s':>8} {'peak GiB':>9} {'rc':>3}")
    for name, sec, gib, rc, _ in rows:
        print(f"{name:40} {sec:8.1f} {gib:9.2f} {rc:3d}")
    nb_total = sum(r[1] for r in rows if r[0].startswith("papermill"))
    total = sum(r[1] for r in rows)
    peak = max((r[2] for r in rows), default=0.0)
    print(f"{'notebooks (sum)':40} {nb_total:8.1f}")
    print(f"{'all steps (sum)':40} {total:8.1f} {peak:9.2f}")
    print(f"targets: whole book < 1200 s ({'met' if total < 1200 else 'NOT met'}), "
          f"peak < 6 GiB ({'met' if peak < 6 else 'NOT met'}); load average now "
          f"{os.getloadavg()[0]:.1f}")
    for name, _, _, rc, tail in failed:
        print(f"\n--- {name} failed (rc {rc}); last lines:\n{tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
