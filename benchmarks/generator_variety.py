"""How many different images of each class a generator draws: each variant of module 2 trained
on the same training set (a label run's pseudo-labels), then scored by `semigen evaluate`.

    python benchmarks/generator_variety.py --data fmnist --seeds 0 \\
        --label-run 'runs/b39/label-fm10-s{seed}' \\
        --variant today generate.class_loss=1 generate.class_floor=0 \\
        --variant projection generate.class_loss=0

Per variant: the share of what real images of a class cover that the generated ones cover
(recall beside real against real: same N, same k, same features; averaged over the classes, and
the least varied class), in the built-in evaluator's features and in the self-supervised
judge's; class consistency (overall and worst class); how much it copies its training images
(nearest-training-image distance ratio); training images and time. Prints Markdown for
BENCHMARKS.md; OUT/results.json keeps every row, OUT/<variant>-seed<S>.png its last grid.

With `--budgets 0.5 1 2 4`, each variant is measured at each of those multiples of its
backend's quick budget (`generate.budget`: steps; batch size unchanged), as one run continued
from the one before: the curve of variety and consistency against training time. Neither
backend changes its learning rate with the budget, so a run continued to 2x is a run of 2x."""

from __future__ import annotations

import json
import shutil
import time
from datetime import date
from pathlib import Path

import common

from semigen.api import generate_run
from semigen.config import resolve
from semigen.evaluation.run import evaluate


def run_one(args, name: str, overrides: dict, seed: int, budget: float = 1.0,
            seconds_before: float = 0.0) -> dict:
    """One variant on one split seed, trained to `budget` x its backend's quick steps
    (continuing the run of a smaller budget, whose training took `seconds_before`)."""
    out = Path(args.out) / f"{name}-seed{seed}"
    settings = {
        "data.source": args.data, "data.labels_per_class": str(args.labels_per_class),
        "data.split_seed": str(seed), "runtime.seed": str(seed), "run.out": str(out),
        "run.progress": "false", "evaluate.per_class": str(args.per_class),
        "evaluate.seed": str(seed), **args.set, **overrides}
    if args.budgets:
        settings["generate.budget"] = str(budget)
    cfg = resolve(preset=args.preset, overrides=settings)
    if cfg.generate.mode == "semi" and not (out / "pseudo_labels.csv").exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(args.label_run.format(seed=seed)) / "pseudo_labels.csv", out)
    start = time.perf_counter()
    generate_run(cfg)
    seconds = seconds_before + time.perf_counter() - start
    images = evaluate(cfg)["images"]
    grid = common.last_grid(out)
    if grid is not None:
        shutil.copy(grid, Path(args.out) / f"{name}-seed{seed}-x{budget:g}.png")
    generated = json.loads((out / "metrics.json").read_text())["generate"]
    row = {"variant": name, "seed": seed, "budget": budget, "steps": cfg.generate.steps,
           "overrides": overrides, "seconds": seconds,
           "training_images_per_class": generated["training_images_per_class"],
           "consistency": images.get("class_consistency"),
           "worst_consistency": images.get("worst_class_consistency"),
           "copy_distance_ratio": images.get("memorisation", {}).get("distance_ratio"),
           "feature_network": images["feature_network"]["network"]}
    for judge, found in (("evaluator", images), ("judge", images.get("judge", {}))):
        variety = found.get("variety", {})
        row[judge] = {"recall": variety.get("recall"), "real_recall": variety.get("real_recall"),
                      "recall_ratio": variety.get("recall_ratio"),
                      "coverage_ratio": variety.get("coverage_ratio"),
                      "worst_class": variety.get("worst_class"),
                      "worst_recall_ratio": variety.get("worst_recall_ratio"),
                      "consistency": found.get("class_consistency"),
                      "per_class": {c: v["variety"]["recall_ratio"]
                                    for c, v in found.get("per_class", {}).items()
                                    if "variety" in v}}
    return row


def _f(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict], args) -> str:
    lines = [f"`python benchmarks/generator_variety.py --data {args.data} --preset {args.preset}"
             f" --labels-per-class {args.labels_per_class} --per-class {args.per_class}`, "
             f"{date.today().isoformat()}; variety = generated recall / real-against-real "
             "recall per class (same N, k = 3), averaged over the classes", "",
             "| variant | seed | budget (steps) | variety (evaluator) | least varied class | "
             "coverage ratio | "
             "variety (judge) | real-against-real recall | class consistency | worst class | "
             "copying: distance ratio | training images | train time (min) |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for r in rows:
        e, j = r["evaluator"], r["judge"]
        worst = f"{e['worst_class']} {_f(e['worst_recall_ratio'])}" if e["worst_class"] else "–"
        lines.append(f"| {r['variant']} | {r['seed']} | {r.get('budget', 1):g}x "
                     f"({r.get('steps', '–')}) | {_f(e['recall_ratio'])} | {worst} | "
                     f"{_f(e['coverage_ratio'])} | {_f(j['recall_ratio'])} | "
                     f"{_f(e['real_recall'])} | "
                     f"{_f(r['consistency'], 3)} | {_f(r['worst_consistency'], 3)} | "
                     f"{_f(r['copy_distance_ratio'])} | "
                     f"{sum(r['training_images_per_class'])} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-variety")
    parser.add_argument("--data", default="fmnist")
    parser.add_argument("--label-run", help="a label run per seed whose pseudo_labels.csv the "
                                            "semi generators learn from, e.g. 'runs/l-s{seed}'")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--variant", nargs="+", action="append", required=True,
                        metavar=("NAME", "k=v"), help="a name and its config fields")
    parser.add_argument("--budgets", type=float, nargs="+",
                        help="multiples of the backend's quick steps, e.g. 0.5 1 2 4: the curve")
    args = common.parse(parser)
    rows = []
    key = ("variant", "seed", "budget")
    for seed in args.seeds:
        for name, *pairs in args.variant:
            seconds = 0.0
            for budget in sorted(args.budgets or [1.0]):
                rows.append(run_one(args, name, dict(p.split("=", 1) for p in pairs), seed,
                                    budget, seconds))
                seconds = rows[-1]["seconds"]
                print(json.dumps(rows[-1]), flush=True)
                common.save_merged(args.out, rows, key)
    every = common.save_merged(args.out, rows, key)
    common.save(args.out, every, markdown(every, args))


if __name__ == "__main__":
    main()
