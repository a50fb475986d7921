"""Module 2 on Fashion-MNIST: generators trained on (a) the labeled images only, (b) those plus
module 1's confident pseudo-labels, (c) every true label; same network and budget.

    python benchmarks/generate_fmnist.py --preset quick --seeds 0 1 2 \\
        --pseudo-labels 'runs/bench-label/semi-seed{seed}/pseudo_labels.csv'

(b) takes its pseudo-labels from a label run of the same split seed (`--pseudo-labels`, a
pattern with {seed}), or trains one first when none is given. Each generator is then scored by
`semigen evaluate`'s image metrics against the 10,000 real test images: FID, KID, class
consistency (overall and worst class), with the cached evaluator network, and how much each
copies its training images (nearest training image, against held-out real images). Prints
Markdown for BENCHMARKS.md and writes OUT/results.json, and OUT/samples-seed<S>.png: the last
per-class sample grid of (a), (b) and (c) side by side. `--score-only` scores finished
generators again without training them."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import common

from semigen.api import generate_run as train_generator
from semigen.api import label_run as train_classifier
from semigen.config import resolve
from semigen.data import load_dataset
from semigen.evaluation.run import evaluate as evaluate_run

MODES = {"labels-only": "(a) labels only", "semi": "(b) labels + pseudo-labels",
         "all-labels": "(c) all labels"}


def run_one(args, mode: str, seed: int) -> dict:
    out = Path(args.out) / f"{mode}-seed{seed}"
    overrides = {"data.source": "fmnist", "data.labels_per_class": str(args.labels_per_class),
                 "data.split_seed": str(seed), "runtime.seed": str(seed), "run.out": str(out),
                 "run.progress": "false", "generate.mode": mode,
                 "evaluate.per_class": str(args.per_class), "evaluate.seed": str(seed), **args.set}
    cfg = resolve(preset=args.preset, overrides=overrides)
    if args.score_only:
        seconds = (earlier_result(args, mode, seed) or {}).get("seconds", float("nan"))
    else:
        if mode == "semi":
            out.mkdir(parents=True, exist_ok=True)
            if args.pseudo_labels:
                shutil.copy(args.pseudo_labels.format(seed=seed), out / "pseudo_labels.csv")
            elif not (out / "pseudo_labels.csv").exists():
                train_classifier(cfg)
        start = time.perf_counter()
        train_generator(cfg)
        seconds = time.perf_counter() - start
    images = evaluate_run(cfg)["images"]
    return {"mode": mode, "seed": seed, "seconds": seconds, "fid": images["fid"],
            "kid": images["kid"], "consistency": images["class_consistency"],
            "worst_consistency": images["worst_class_consistency"],
            "copy_distance_ratio": images["memorisation"]["distance_ratio"],
            "copy_rate": images["memorisation"]["copy_rate"],
            "training_images": json.loads((out / "metrics.json").read_text())["generate"][
                "training_images"], "evaluator": images["feature_network"]}


def earlier_result(args, mode: str, seed: int) -> dict | None:
    """This (mode, seed)'s row in OUT/results.json from an earlier invocation, if any."""
    return next((r for r in args.earlier if (r["mode"], r["seed"]) == (mode, seed)), None)


def side_by_side(out: Path, seed: int, classes: list[str]) -> Path | None:
    """One PNG with the last per-class sample grid of (a), (b) and (c) for `seed`."""
    grids = {label: common.last_grid(out / f"{mode}-seed{seed}") for mode, label in MODES.items()}
    grids = {label: png for label, png in grids.items() if png is not None}
    return common.grids_side_by_side(out / f"samples-seed{seed}.png", grids, classes) \
        if grids else None


def mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(results: list[dict], args) -> str:
    lines = [f"`python benchmarks/generate_fmnist.py --preset {args.preset} --seeds "
             f"{' '.join(map(str, args.seeds))}`, {date.today().isoformat()}; evaluator: "
             f"{results[0]['evaluator']['network']}, test accuracy "
             f"{results[0]['evaluator']['test_accuracy']:.4f}; N = {args.per_class} generated "
             "per class against the 10,000 test images", "",
             "| generator trained on | training images | FID | KID | class consistency | "
             "worst class | copying: distance ratio | copy rate | train time (min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by = {m: [r for r in results if r["mode"] == m] for m in MODES}
    for mode, label in MODES.items():
        rs = by[mode]
        if rs:
            lines.append(
                f"| {label} | {statistics.mean(r['training_images'] for r in rs):.0f} | "
                f"{mean_std([r['fid'] for r in rs], 2)} | {mean_std([r['kid'] for r in rs], 4)} | "
                f"{mean_std([r['consistency'] for r in rs])} | "
                f"{mean_std([r['worst_consistency'] for r in rs])} | "
                f"{mean_std([r['copy_distance_ratio'] for r in rs], 2)} | "
                f"{mean_std([r['copy_rate'] for r in rs])} | "
                f"{statistics.mean(r['seconds'] for r in rs) / 60:.1f} |")
    if by["semi"] and by["all-labels"]:
        b, c = by["semi"], by["all-labels"]
        ratio_cc = statistics.mean(r["consistency"] for r in b) / \
            statistics.mean(r["consistency"] for r in c)
        ratio_fid = statistics.mean(r["fid"] for r in b) / statistics.mean(r["fid"] for r in c)
        lines += ["", f"(b)/(c): class consistency {ratio_cc:.3f} (target >= 0.95), "
                      f"FID {ratio_fid:.3f} (target <= 1.1)"]
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-generate")
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--pseudo-labels", metavar="PATTERN",
                        help="pseudo_labels.csv of a label run per seed, e.g. "
                             "'runs/bench-label/semi-seed{seed}/pseudo_labels.csv'")
    parser.add_argument("--score-only", action="store_true",
                        help="score the finished generators under OUT again (after a metric was "
                             "added) without training; train times come from OUT/results.json, "
                             "and rows there that have every metric are kept as they are")
    args = common.parse(parser)
    results_file = Path(args.out) / "results.json"
    args.earlier = json.loads(results_file.read_text()) if results_file.exists() else []
    results = []

    for seed in args.seeds:
        for mode in args.modes:
            earlier = earlier_result(args, mode, seed)
            if args.score_only and earlier and "copy_rate" in earlier:
                results.append(earlier)  # already scored with every metric
            else:
                results.append(run_one(args, mode, seed))
            print(f"{mode} seed {seed}: FID {results[-1]['fid']:.2f}, consistency "
                  f"{results[-1]['consistency']:.3f}, {results[-1]['seconds'] / 60:.1f} min",
                  flush=True)
            common.save_merged(args.out, results, ("mode", "seed"))
    common.save_merged(args.out, results, ("mode", "seed"), markdown(results, args))
    classes = load_dataset(resolve(overrides={"data.source": "fmnist"}).data).classes
    for seed in args.seeds:
        print(f"samples of seed {seed}: {side_by_side(Path(args.out), seed, classes)}")


if __name__ == "__main__":
    main()
