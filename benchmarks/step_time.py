"""Seconds per training step of the classifier (semi: labeled, unlabeled weak and strong views)
and of the generator (one discriminator and one generator update), at a preset's shapes.

    python benchmarks/step_time.py --data fmnist --preset quick --steps 80

The fit's wall time is mostly these steps times the preset's step counts. Short runs in a
temporary folder; the first 10 steps (start-up, first batches) are not counted, nor the
evaluation at the end. Prints a Markdown table for BENCHMARKS.md."""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

import semigen
from semigen.rundir import read_stats


def seconds_per_step(run: Path, stage: str, steps: int) -> float:
    # the loss lines (every 10 steps), not the evaluation and "done" lines of the same step
    times = {r["step"]: r["time"] for r in read_stats(run)
             if r.get("stage") == stage and ("loss" in r or "d_loss" in r)}
    return (times[steps] - times[10]) / (steps - 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fmnist")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=80, help="a multiple of 10, > 10")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    common = dict(preset=args.preset, device=args.device, run__resume="none",
                  run__progress=False, run__log_every=10)
    with tempfile.TemporaryDirectory() as work:
        label_run, generate_run = Path(work) / "label", Path(work) / "generate"
        semigen.label(args.data, out=str(label_run), label__steps=args.steps,
                      label__eval_every=10 * args.steps, label__eval_unlabeled=100, **common)
        semigen.generate(args.data, out=str(generate_run), generate__mode="labels-only",
                         generate__steps=args.steps, generate__sample_every=10 * args.steps,
                         **common)
        label = seconds_per_step(label_run, "label", args.steps)
        generate = seconds_per_step(generate_run, "generate", args.steps)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}\n")
    print("| step | seconds |\n| --- | ---: |")
    print(f"| classifier ({args.data}, {args.preset}, semi) | {label:.3f} |")
    print(f"| generator ({args.data}, {args.preset}) | {generate:.3f} |")


if __name__ == "__main__":
    main()
