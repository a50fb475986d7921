"""Module 3: `semigen fit` with R joint rounds, beside the labels-only and all-labels baselines
that the same fit trains on the same budget.

    python benchmarks/fit_rounds.py --data fmnist --preset quick --seeds 0 1 2 --rounds 3
    python benchmarks/fit_rounds.py --data digits --preset demo --seeds 0 1 2 --rounds 3

One fit per seed (split seed = model seed) through the Python API, sequentially, so that wall
times compare. A fit with R rounds records every round r = 0..R (round 0 is module 1 alone), so
one run gives the accuracy after 0, 1, ..., R rounds. `--control also` runs each seed again with
``fit.synthetic_ratio=0``: the same rounds and steps without generated images, which tells
what the generated images add beyond the rounds' extra training. Writes OUT/results.json
(keeping other invocations' seeds, so two processes can share the work) and prints Markdown for
BENCHMARKS.md.

`--reuse-label` and `--reuse-generator` (paths with ``{seed}``) start each fit from a finished
`semigen label` run and a `semigen generate` run on its pseudo-labels (e.g. label_fmnist.py's and
generate_fmnist.py's), whose configs must equal the fit's: the fit then skips those two stages,
which take most of a CPU fit's time, and their times come from the runs' own stats.jsonl.

    python benchmarks/fit_rounds.py --data fmnist --seeds 0 1 2 --rounds 3 --control also \
        --reuse-label 'runs/bench-label/semi-seed{seed}' \
        --reuse-generator 'runs/bench-generate/semi-seed{seed}'"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import common

import semigen
from semigen.api import make_config
from semigen.config import differences, load_yaml
from semigen.run import Records, read_metrics, read_stats


def run_one(args, seed: int, control: bool = False) -> dict:
    out = Path(args.out) / f"{'control-' if control else ''}seed{seed}"
    # The control's classifier never sees a generated image, so its generator is not refined
    # (one step: the stage still runs) and it needs no baselines of its own.
    extra = {"fit.synthetic_ratio": 0, "fit.baselines": False,
             "fit.generate_steps": 1} if control else {}
    options = dict(preset=args.preset, rounds=args.rounds, seed=seed, split_seed=seed,
                   labels_per_class=args.labels_per_class, run__progress="false",
                   **args.set | extra)
    reused = {}
    if args.reuse_label:
        label_run = Path(args.reuse_label.format(seed=seed))
        generator_run = Path(args.reuse_generator.format(seed=seed))
        if not out.exists():  # else: a fit started so before, continued
            start_from(out, make_config(args.data, str(out), **options), label_run,
                       generator_run)
        reused = {"label": stage_seconds(label_run, "label"),
                  "generate": stage_seconds(generator_run, "generate")}
    start = time.perf_counter()
    summary = semigen.fit(args.data, out=str(out), **options)
    return {"seed": seed, "control": control, **summary, "reused_seconds": reused,
            "wall_seconds": time.perf_counter() - start}


def start_from(out: Path, cfg, label_run: Path, generator_run: Path) -> None:
    """Make `out` a fit whose label and generate stages are the finished runs given, refusing
    runs that differ from the fit's config in a section that shapes them."""
    new = cfg.to_dict()
    for run, stage in ((label_run, "label"), (generator_run, "generate")):
        if stage not in read_metrics(run):
            raise SystemExit(f"{run}: its {stage} stage has not finished")
        sections = ("data", "runtime", stage)
        old = load_yaml(run / "config.yaml")
        changed = differences({k: old[k] for k in sections}, {k: new[k] for k in sections})
        if changed:
            raise SystemExit(f"{run} was trained with another config: {'; '.join(changed)}")
    if (label_run / "pseudo_labels.csv").read_bytes() != \
            (generator_run / "pseudo_labels.csv").read_bytes():
        raise SystemExit(f"{generator_run} was not trained on {label_run}'s pseudo-labels")
    shutil.copytree(label_run, out, ignore=shutil.ignore_patterns("tensorboard"))
    shutil.copytree(generator_run / "checkpoints" / "generate", out / "checkpoints" / "generate")
    shutil.copytree(generator_run / "samples", out / "samples")
    generate_stats = [r for r in read_stats(generator_run) if r.get("stage") == "generate"]
    with open(out / "stats.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in generate_stats)
    with Records(out) as rundir:
        rundir.update_metrics("generate", read_metrics(generator_run)["generate"])
        rundir.mark_finished("generate", stage_seconds(generator_run, "generate"))


def stage_seconds(run: Path, stage: str) -> float:
    """A finished run's training time for `stage`: its first to its last stats.jsonl line."""
    times = [r["time"] for r in read_stats(run) if r.get("stage") == stage]
    return round(times[-1] - times[0], 1)


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
             f"--seeds {seeds} --rounds {args.rounds}{' --control also' if controls else ''}`, "
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
    for res in results:
        for stage, seconds in res.get("reused_seconds", {}).items():
            stages.setdefault(f"{stage} (own run)", []).append(seconds / 60)
    # the stages' own times (kept across a stopped and continued fit), not this invocation's
    walls = ", ".join(
        f"{(res['total_seconds'] + sum(res.get('reused_seconds', {}).values())) / 60:.1f}"
        for res in results)
    lines += ["", f"Gain of round {args.rounds} over round 0: "
                  f"{', '.join(f'{g:+.2f}' for g in gains)} points (seeds {seeds}; target >= +1).",
              f"Time of the whole fit, its stages summed (min): {walls}; per stage (mean): "
              + ", ".join(f"{k} {statistics.mean(v):.1f}" for k, v in stages.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-fit")
    parser.add_argument("--data", default="fmnist")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--control", choices=("no", "also", "only"), default="no",
                        help="also (or only) run each seed with fit.synthetic_ratio=0")
    parser.add_argument("--reuse-label", metavar="RUN", help="a finished label run per seed, "
                        "e.g. 'runs/bench-label/semi-seed{seed}' (needs --reuse-generator)")
    parser.add_argument("--reuse-generator", metavar="RUN",
                        help="a finished generate run on that label run's pseudo-labels")
    args = common.parse(parser)
    kinds = {"no": (False,), "also": (False, True), "only": (True,)}[args.control]
    for seed in args.seeds:
        for control in kinds:
            result = run_one(args, seed, control)
            accuracies = [f"{r['test_accuracy'] * 100:.2f}" for r in result["rounds"]]
            print(f"seed {seed}{' control' if control else ''}: test accuracy by round "
                  f"{accuracies}, {result['wall_seconds'] / 60:.1f} min", flush=True)
            results = common.save_merged(args.out, [result], ("control", "seed"))
    common.save(args.out, results, markdown(results, args))


if __name__ == "__main__":
    main()
