"""Module 1 on Fashion-MNIST or a folder set: semi beside labels-only and all-labels, same
network and budget.

    python benchmarks/label_fmnist.py --preset quick --seeds 0 1 2 --out runs/bench-label
    python benchmarks/label_fmnist.py --data 'runs/shapes{seed}' \
        --truth 'runs/shapes{seed}.truth.csv' --all-labels-data 'runs/shapes{seed}-all' \
        --out runs/bench-shapes   # folder sets from make_shapes.py --all-labeled-copy
    python benchmarks/label_fmnist.py --seeds 0 --modes semi \\
        --variant fixed:label.thresholds=fixed,label.dist_align=false   # an ablation

Each (mode or variant, seed) is one `semigen label` run through the Python API, sequentially, so
that wall times compare. Writes OUT/results.json and prints Markdown for BENCHMARKS.md: the
table (mean +- std over seeds), the share of the baseline gap that semi closes, and semi's test
accuracy against wall time. Needs Debian's dataset-fashion-mnist (or a network)."""

from __future__ import annotations

import csv
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import common
import torch

from semigen.api import label_run as train
from semigen.config import resolve
from semigen.run import read_metrics, read_stats


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition(":")
    overrides = dict(pair.split("=", 1) for pair in settings.split(",") if pair)
    return name, {"label.mode": "semi", **overrides}


def pseudo_label_scores(run: Path, truth_csv: str) -> tuple[float, float]:
    """The share of RUN/pseudo_labels.csv that agrees with a truth CSV (path,label), and the
    calibration error of its confidences."""
    from torchmetrics.functional.classification import binary_calibration_error
    with open(truth_csv, newline="") as f:
        truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    with open(run / "pseudo_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    right = torch.tensor([truth[r["path"]] == r["label"] for r in rows]).long()
    confidence = torch.tensor([float(r["confidence"]) for r in rows])
    return (right.float().mean().item(),
            binary_calibration_error(confidence, right, n_bins=15, norm="l1").item())


def run_one(args, name: str, overrides: dict, seed: int) -> dict:
    out = Path(args.out) / f"{name}-seed{seed}"
    source = (args.all_labels_data if name == "all-labels" and args.all_labels_data
              else args.data).format(seed=seed)
    if source != "fmnist" and name == "all-labels":
        overrides = {**overrides, "label.mode": "labels-only"}  # a folder with every label
    cfg = resolve(preset=args.preset, overrides={
        "data.source": source, "data.labels_per_class": str(args.labels_per_class),
        "data.split_seed": str(seed), "runtime.seed": str(seed), "run.out": str(out),
        "run.progress": "false", "run.resume": "none", **overrides, **args.set})
    start = time.perf_counter()
    metrics = train(cfg)
    seconds = time.perf_counter() - start
    curve = [(r["time"], r["step"], r["test_accuracy"]) for r in read_stats(out)
             if "test_accuracy" in r and "event" not in r]
    t0 = next(r["time"] for r in read_stats(out)) if curve else 0
    pseudo, pseudo_ece = metrics.get("pseudo_label_accuracy"), metrics.get("pseudo_label_ece")
    if pseudo is None and args.truth and name != "all-labels":
        pseudo, pseudo_ece = pseudo_label_scores(out, args.truth.format(seed=seed))
    estimate = read_metrics(out).get("represent", {})
    calibration = read_metrics(out).get("calibrate", {})
    return {"name": name, "seed": seed, "seconds": seconds, "run": str(out),
            "test_accuracy": metrics["test_accuracy"], "pseudo_label_accuracy": pseudo,
            "estimated_accuracy": estimate.get("estimated_accuracy"),
            "features_test_accuracy": estimate.get("features_test_accuracy"),
            "features_chosen": estimate.get("features_chosen"),
            "features_candidates": estimate.get("features_candidates"),
            "test_ece": metrics["test_ece"], "pseudo_label_ece": pseudo_ece,
            "test_ece_uncalibrated": metrics.get("test_ece_uncalibrated", metrics["test_ece"]),
            "classifier_estimate": calibration.get("classifier_estimate"),
            "temperature": calibration.get("temperature"), "steps": cfg.label.steps,
            "curve": [(round(t - t0, 1), step, acc) for t, step, acc in curve]}


def mean_std(values: list[float], scale: float = 100.0) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.2f}"
    return f"{statistics.mean(values) * scale:.2f} ± {statistics.stdev(values) * scale:.2f}"


def optional(rows: list[dict], key: str, scale: float = 100.0) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return mean_std(values, scale) if values else "-"


def markdown(results: list[dict], args) -> str:
    names = list(dict.fromkeys(r["name"] for r in results))
    by = {n: [r for r in results if r["name"] == n] for n in names}
    lines = [f"`python benchmarks/label_fmnist.py --data {args.data} --preset {args.preset} "
             f"--seeds "
             f"{' '.join(map(str, args.seeds))}`" + (f" (set: {args.set})" if args.set else ""),
             f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
             f"{torch.__version__}, {date.today().isoformat()}", "",
             "| mode | test accuracy % | pseudo-label accuracy % | test ECE, raw → "
             "calibrated | pseudo-label ECE | temperature | classifier estimate % (half the "
             "labels, held out) | features' estimate % (held out) | features alone, test % | "
             "wall time (min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in names:
        rs = by[n]
        pl = [r["pseudo_label_accuracy"] for r in rs if r["pseudo_label_accuracy"] is not None]
        lines.append(f"| {n} | {mean_std([r['test_accuracy'] for r in rs])} | "
                     f"{mean_std(pl) if pl else '-'} | "
                     f"{statistics.mean(r['test_ece_uncalibrated'] for r in rs):.3f} → "
                     f"{statistics.mean(r['test_ece'] for r in rs):.3f} | "
                     f"{optional(rs, 'pseudo_label_ece', 1.0)} | "
                     f"{optional(rs, 'temperature', 1.0)} | "
                     f"{optional(rs, 'classifier_estimate')} | "
                     f"{optional(rs, 'estimated_accuracy')} | "
                     f"{optional(rs, 'features_test_accuracy')} | "
                     f"{statistics.mean(r['seconds'] for r in rs) / 60:.1f} |")
    if {"semi", "labels-only", "all-labels"} <= set(names):
        closed = []
        for seed in args.seeds:
            acc = {n: next(r["test_accuracy"] for r in by[n] if r["seed"] == seed)
                   for n in ("semi", "labels-only", "all-labels")}
            closed.append((acc["semi"] - acc["labels-only"])
                          / (acc["all-labels"] - acc["labels-only"]))
        lines += ["", f"Share of the labels-only → all-labels gap that semi closes: "
                      f"{mean_std(closed)} % (per seed: "
                      + ", ".join(f"{c * 100:.1f}" for c in closed) + ")"]
    for n in names:
        if n in ("labels-only", "all-labels"):
            continue
        curves = [r["curve"] for r in by[n]]
        points = min(len(c) for c in curves)
        if points:
            lines += ["", f"{n}: test accuracy against wall time (mean over seeds)", "",
                      "| step | minutes | test accuracy % |", "| ---: | ---: | ---: |"]
            for i in range(points):
                lines.append(f"| {curves[0][i][1]} | "
                             f"{statistics.mean(c[i][0] for c in curves) / 60:.1f} | "
                             f"{mean_std([c[i][2] for c in curves])} |")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-label")
    parser.add_argument("--data", default="fmnist", help="fmnist, or a folder ({seed} allowed)")
    parser.add_argument("--truth", help="a folder's unlabeled truth CSV ({seed} allowed)")
    parser.add_argument("--all-labels-data", help="the folder with every training image "
                        "labeled, for the all-labels baseline ({seed} allowed)")
    parser.add_argument("--modes", nargs="*", default=["labels-only", "all-labels", "semi"])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:k=v,k=v",
                        help="an extra semi run with these config overrides")
    args = common.parse(parser)
    plan = [(m, {"label.mode": m}) for m in args.modes] + [parse_variant(v) for v in args.variant]
    results = []
    for seed in args.seeds:
        for name, overrides in plan:
            results.append(run_one(args, name, overrides, seed))
            print(f"{name} seed {seed}: test {results[-1]['test_accuracy']:.4f} in "
                  f"{results[-1]['seconds'] / 60:.1f} min", flush=True)
            common.save(args.out, results)
    common.save(args.out, results, markdown(results, args))


if __name__ == "__main__":
    main()
