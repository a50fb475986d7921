"""Figures that a pure restructuring must leave unchanged, to the last digit.

Runs the demo (`semigen demo`) and a short Fashion-MNIST label + generate run (the GAN and the
diffusion backend, a few hundred steps each), then writes one JSON of every number those runs
recorded: metrics.json (less timings), every loss line of stats.jsonl and the weight
fingerprints each stage ends with. Two such files, one from before a change and one from after,
compare with ``--compare A.json B.json``: the differences are listed, and the exit code is 1 if
there are any.

    python benchmarks/same_figures.py --out /tmp/before.json
    python benchmarks/same_figures.py --out /tmp/after.json
    python benchmarks/same_figures.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Records that measure the machine, not the arithmetic, or say where a file is.
TIMINGS = ("time", "seconds", "images_per_second", "elapsed", "duration")
PATHS = ("checkpoint", "path")

FMNIST_LABEL = ["--labels-per-class", "10", "--label.pretrain_steps", "100",
                "--label.steps", "100", "--label.calibration_steps", "40",
                "--label.eval_every", "50", "--run.progress", "false"]
FMNIST_GENERATE = {
    "gan": ["--generate.steps", "300", "--generate.sample_every", "300"],
    "diffusion": ["--generate.backend", "diffusion", "--generate.steps", "150",
                  "--generate.sample_every", "150", "--generate.sample_steps", "5"],
}


def semigen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "semigen", *args], check=True)


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if not any(t in k for t in TIMINGS) and k not in PATHS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def figures(run: Path) -> dict:
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    return {"metrics": without_timings(json.loads((run / "metrics.json").read_text())),
            "stats": without_timings(stats)}


def measure(work: Path, fmnist: bool) -> dict:
    found = {}
    semigen("demo", "--out", str(work / "demo"), "--device", "cpu")
    found["demo"] = figures(work / "demo")
    if fmnist:
        for backend, options in FMNIST_GENERATE.items():
            run = work / f"fmnist-{backend}"
            if backend == "gan":
                semigen("label", "fmnist", "--out", str(run), *FMNIST_LABEL)
            else:  # the same label run, its generator trained by the other backend
                subprocess.run(["cp", "-r", str(work / "fmnist-gan"), str(run)], check=True)
                for leftover in ("checkpoints/generate", "samples"):
                    subprocess.run(["rm", "-rf", str(run / leftover)], check=True)
            semigen("generate", str(run), "--out", str(run), *options)
            found[f"fmnist-{backend}"] = figures(run)
    return found


def differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} -> {b!r}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="where the JSON of figures goes")
    p.add_argument("--no-fmnist", action="store_true", help="the demo only")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = p.parse_args()
    if args.compare:
        before, after = (json.loads(Path(f).read_text()) for f in args.compare)
        found = differences(before, after)
        print("\n".join(found) if found else "the same figures, to the last digit")
        return 1 if found else 0
    with tempfile.TemporaryDirectory() as work:
        found = without_timings(measure(Path(work), not args.no_fmnist))
    Path(args.out).write_text(json.dumps(found, indent=1))
    print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
