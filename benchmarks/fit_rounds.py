"""Module 3: `semigen fit` with R joint rounds, beside the labels-only and all-labels baselines
that the same fit trains on the same budget.

    python benchmarks/fit_rounds.py --data fmnist --preset quick --seeds 0 1 2 --rounds 3
    python benchmarks/fit_rounds.py --data digits --preset demo --seeds 0 1 2 --rounds 3

One fit per seed (split seed = model seed) through the Python API, sequentially, so that wall
times compare. A fit with R rounds records every round r = 0..R (round 0 is module 1 alone), so
one run gives the accuracy after 0, 1, ..., R rounds. `--control` runs each seed again with
``fit.synthetic_ratio=0``: the same rounds and steps without generated images, which tells
what the generated images add beyond the rounds' extra training. Writes OUT/results.json and
prints Markdown for BENCHMARKS.md."""

from __future__ import annotations

import statistics
import time
from datetime import date
from pathlib import Path

import common

import semigen


def run_one(args, seed: int, control: bool = False) -> dict:
    out = Path(args.out) / f"{'control-' if control else ''}seed{seed}"
    extra = {"fit.synthetic_ratio": 0, "fit.baselines": False} if control else {}
    start = time.perf_counter()
    summary = semigen.fit(args.data, out=str(out), preset=args.preset, rounds=args.rounds,
                          seed=seed, split_seed=seed, labels_per_class=args.labels_per_class,
                          run__progress="false", **args.set | extra)
    return {"seed": seed, "control": control, **summary,
            "wall_seconds": time.perf_counter() - start}


def mean_std(values: list, scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(everything: list[dict], args) -> str:
    results = [r for r in everything if not r["control"]]
    controls = [r for r in everything if r["control"]]
    seeds = " ".join(str(r["seed"]) for r in results)
    lines = [f"`python benchmarks/fit_rounds.py --data {args.data} --preset {args.preset} "
             f"--seeds {seeds} --rounds {args.rounds}{' --control' if controls else ''}`, "
             f"{date.today().isoformat()}; "
             f"{args.labels_per_class} labels per class; mean ± std over seeds {seeds}", "",
             "| classifier | test accuracy % | pseudo-label accuracy % | FID | "
             "class consistency | worst class |", "| --- | ---: | ---: | ---: | ---: | ---: |"]

    def baseline(name):
        return mean_std([r["baselines"].get(name) for r in results], 100)
    lines.append(f"| labels-only baseline | {baseline('labels-only')} | | | | |")
    for r in range(args.rounds + 1):
        rows = [res["rounds"][r] for res in results]
        name = "module 1 alone (round 0)" if r == 0 else f"after joint round {r}"
        lines.append(
            f"| {name} | {mean_std([x['test_accuracy'] for x in rows], 100)} | "
            f"{mean_std([x.get('pseudo_label_accuracy') for x in rows], 100)} | "
            f"{mean_std([x.get('fid') for x in rows])} | "
            f"{mean_std([x.get('class_consistency') for x in rows], digits=3)} | "
            f"{mean_std([x.get('worst_class_consistency') for x in rows], digits=3)} |")
    lines.append(f"| all-labels baseline | {baseline('all-labels')} | | | | |")
    for r in range(1, args.rounds + 1) if controls else ():
        rows = [res["rounds"][r] for res in controls]
        lines.append(f"| control: round {r} without generated images | "
                     f"{mean_std([x['test_accuracy'] for x in rows], 100)} | "
                     f"{mean_std([x.get('pseudo_label_accuracy') for x in rows], 100)} | | | |")
    gains = [(res["rounds"][-1]["test_accuracy"] - res["rounds"][0]["test_accuracy"]) * 100
             for res in results]
    stages = {}
    for res in results:
        for stage, seconds in res["seconds"].items():
            stages.setdefault(stage, []).append(seconds / 60)
    walls = ", ".join(f"{res['wall_seconds'] / 60:.1f}" for res in results)
    lines += ["", f"Gain of round {args.rounds} over round 0: "
                  f"{', '.join(f'{g:+.2f}' for g in gains)} points (seeds {seeds}; target >= +1).",
              f"Wall time of the whole fit (min): {walls}; per stage (mean): "
              + ", ".join(f"{k} {statistics.mean(v):.1f}" for k, v in stages.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-fit")
    parser.add_argument("--data", default="fmnist")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--control", action="store_true",
                        help="also run each seed with fit.synthetic_ratio=0")
    args = common.parse(parser)
    results = []
    for seed in args.seeds:
        for control in (False, True) if args.control else (False,):
            results.append(run_one(args, seed, control))
            accuracies = [f"{r['test_accuracy'] * 100:.2f}" for r in results[-1]["rounds"]]
            print(f"seed {seed}{' control' if control else ''}: test accuracy by round "
                  f"{accuracies}, {results[-1]['wall_seconds'] / 60:.1f} min", flush=True)
            common.save(args.out, results)
    common.save(args.out, results, markdown(results, args))


if __name__ == "__main__":
    main()
