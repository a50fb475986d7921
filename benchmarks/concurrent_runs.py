"""One quick label run alone against two at once on the same machine, with each run's thread
count (``--runtime.threads``) left to torch (one per core) or set.

    python benchmarks/concurrent_runs.py --data fmnist --steps 80

Each run is a `semigen label` process (semi mode, the preset's batch); its seconds per step come
from its stats.jsonl, the first 10 steps (start-up) not counted. Throughput is every run's steps
per second added up. Prints a Markdown table for BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import torch
from step_time import seconds_per_step

# (runs at once, threads per run, OMP_WAIT_POLICY): threads 0 is semigen's default
# (OMP_NUM_THREADS, else one per core); a wait policy of None leaves OpenMP's own.
CASES = {"threads": [(1, 0, None), (1, 1, None), (2, 0, None), (2, 1, None)],
         "wait-policy": [(1, 0, "PASSIVE"), (2, 0, "PASSIVE"), (1, 0, "ACTIVE"),
                         (2, 0, "ACTIVE")],
         "alone": [(1, 0, None), (1, 0, "PASSIVE")] * 2}


def run_together(data: str, preset: str, runs: int, threads: int, policy: str | None,
                 steps: int, work: Path) -> list[float]:
    """Start `runs` label processes at once; their seconds per step."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    outs = [Path(tempfile.mkdtemp(dir=work)) / f"{runs}x{threads}-{policy}-{i}"
            for i in range(runs)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "semigen", "label", data, "--out", str(out), "--preset", preset,
         "--seed", str(i), "--runtime.threads", str(threads), "--label.steps", str(steps),
         "--label.eval-every", str(10 * steps), "--label.eval-unlabeled", "100",
         "--run.log-every", "10", "--run.progress", "false", "--resume", "none"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i, out in enumerate(outs)]
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"a label run failed: {proc.args}")
    return [seconds_per_step(out, "label", steps) for out in outs]


def main() -> None:
    p = common.parser(__doc__, "runs/bench-concurrent")
    p.add_argument("--data", default="fmnist")
    p.add_argument("--steps", type=int, default=80, help="a multiple of 10, > 10")
    p.add_argument("--cases", choices=list(CASES), nargs="+", default=list(CASES))
    args = common.parse(p)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for runs, threads, policy in [case for name in args.cases for case in CASES[name]]:
            per_step = run_together(args.data, args.preset, runs, threads, policy, args.steps,
                                    Path(work))
            rows.append({"runs": runs, "threads": threads, "omp_wait_policy": policy,
                         "seconds_per_step": per_step,
                         "steps_per_second": sum(1 / s for s in per_step)})
            print(rows[-1], flush=True)
    cores = os.cpu_count()
    table = [f"{platform.machine()}, {cores} cores, torch {torch.__version__}; "
             f"{args.data}, {args.preset} preset, semi, {args.steps} steps per run\n",
             "| runs at once | threads per run | OMP_WAIT_POLICY | seconds per step (each run) "
             "| steps/s (all runs) |", "| ---: | --- | --- | --- | ---: |"]
    for row in rows:
        threads = row["threads"] or f"default ({cores})"
        each = ", ".join(f"{s:.3f}" for s in row["seconds_per_step"])
        table.append(f"| {row['runs']} | {threads} | {row['omp_wait_policy'] or 'unset'} | "
                     f"{each} | {row['steps_per_second']:.2f} |")
    common.save(args.out, rows, "\n".join(table))


if __name__ == "__main__":
    main()
