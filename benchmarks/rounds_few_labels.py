"""Module 3 where labels are few: round 1 beside round 0 and beside the control (the same
round's training without generated images), with both baselines, at N labels per class.

    python benchmarks/rounds_few_labels.py --labels-per-class 1 --seeds 0 1 2 \
        --reuse-representation 'runs/bench-label/semi-seed{seed}' --out runs/bench-rounds
    python benchmarks/rounds_few_labels.py --labels-per-class 1 --seeds 0 \
        --variant weight-0.1:fit.synthetic_weight=0.1 \
        --variant no-feature-step:fit.feature_step=false \
        --variant all-pseudo-labels:generate.min_confidence=0

Per seed, one base run (split seed = model seed): `semigen label` (module 1) and `semigen
generate` on its pseudo-labels, and the labels-only and all-labels baselines on the same
budget. Then each variant copies the base run and runs the joint round's label stage
(`label-r1`, exactly what `semigen fit` runs: the round's images from `joint._round_images`,
then the classifier's round) into the copy. The default variants are `round` (the defaults)
and `control` (``fit.synthetic_ratio=0``: the same steps, no generated image). The round's
generator refinement (`generate-r1`) does not change round 1's classifier and is not run.

`--reuse-representation` copies the representation stage's checkpoint from a finished label
run of the same seed (e.g. label_fmnist.py's at 10 labels per class): SimCLR reads no label,
so the representation of a seed does not depend on how many images are labeled, and a CPU
saves its 4-8 minutes per seed. `--reuse-all-labels` does the same for the all-labels baseline
(a run of its own with every label; it does not depend on the labeled subset either).
Writes OUT/results.json and prints Markdown for BENCHMARKS.md. Needs Debian's
dataset-fashion-mnist (or a network) for fmnist."""

from __future__ import annotations

import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import common

from semigen import api
from semigen.config import make_config
from semigen.joint.fit import baseline_config
from semigen.joint.images import round_images
from semigen.labeling import represent
from semigen.labeling.train import train_classifier
from semigen.run import Layout, open_run, read_metrics, read_stats

DEFAULT_VARIANTS = ["round:", "control:fit.synthetic_ratio=0"]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in settings.split(",") if pair)


def config(args, run: Path, seed: int, **fields):
    return make_config(data=args.data, out=str(run), preset=args.preset,
                       data__labels_per_class=args.labels_per_class, data__split_seed=seed,
                       runtime__seed=seed, run__progress=False,
                       **{k.replace(".", "__"): v for k, v in {**args.set, **fields}.items()})


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return round(time.perf_counter() - start, 1)


def base_run(args, seed: int) -> tuple[Path, dict]:
    """Module 1, its baselines and module 2 for `seed`, once (a rerun skips what is done)."""
    run = Path(args.out) / f"lpc{args.labels_per_class}-seed{seed}" / "base"
    cfg = config(args, run, seed)
    seconds = {}
    if "label" not in read_metrics(run):
        if args.reuse_representation:
            source = Layout(args.reuse_representation.format(seed=seed)).stage_folder(
                represent.STAGE)
            shutil.copytree(source, run / "checkpoints" / represent.STAGE, dirs_exist_ok=True)
        seconds["label"] = timed(lambda: api.label_run(cfg))
    baselines = {}
    for mode in ("labels-only", "all-labels"):
        reused = args.reuse_all_labels and mode == "all-labels"
        where = (Path(args.reuse_all_labels.format(seed=seed)) if reused
                 else run / "baselines" / mode)
        if "label" not in read_metrics(where):
            seconds[mode] = timed(lambda m=mode: api.label_run(baseline_config(cfg, m)))
        baselines[mode] = read_metrics(where)["label"]["test_accuracy"]
    if "generate" not in read_metrics(run):
        seconds["generate"] = timed(lambda: api.generate_run(cfg))
    label = read_metrics(run)["label"]
    return run, {"round0": label["test_accuracy"], "baselines": baselines,
                 "features_test_accuracy": read_metrics(run).get("represent", {}).get(
                     "features_test_accuracy"), "seconds": seconds}


def run_variant(args, base: Path, seed: int, name: str, fields: dict) -> dict:
    """The round's label stage, in a copy of the base run; a variant that sets generate.*
    fields first trains its own round-0 generator in the copy."""
    run = base.parent / name
    if "label-r1" not in read_metrics(run):
        cfg = config(args, run, seed, **fields)
        if "generate" not in read_metrics(run):
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run, ignore=shutil.ignore_patterns("baselines"))
            if any(key.startswith("generate.") for key in fields):
                shutil.rmtree(run / "checkpoints" / "generate")
                metrics = read_metrics(run)
                metrics.pop("generate")
                (run / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
                api.generate_run(cfg)
        with open_run(cfg) as opened:
            start = time.perf_counter()
            synthetic = round_images(opened, 1)
            images_seconds = time.perf_counter() - start
            train_classifier(opened, 1, init=Layout(run).checkpoint("label"),
                             synthetic=synthetic)
        with open(run / "bench-seconds.json", "w") as f:
            json.dump({"images": round(images_seconds, 1),
                       "round": round(time.perf_counter() - start, 1)}, f)
    done = read_metrics(run)
    step = [r for r in read_stats(run) if r.get("event") == "feature_step"]
    return {"test_accuracy": done["label-r1"]["test_accuracy"],
            "pseudo_label_accuracy": done["label-r1"].get("pseudo_label_accuracy"),
            "feature_step_pseudo_label_accuracy": (
                step[-1].get("features_pseudo_label_accuracy") if step else None),
            "images": done.get("images-r1"),
            "seconds": json.loads((run / "bench-seconds.json").read_text())}


def table(rows: list[dict], names: list[str]) -> str:
    def cell(values):
        return common.mean_and_spread(values, 2)
    lines = ["| labels per class | seeds | labels-only | round 0 | "
             + " | ".join(f"{n} (round 1) | {n} − round 0" for n in names) + " | all-labels |",
             "| " + " | ".join(["---"] * (4 + 2 * len(names) + 1)) + " |"]
    for lpc in sorted({r["labels_per_class"] for r in rows}):
        group = [r for r in rows if r["labels_per_class"] == lpc]
        cells = [str(lpc), ", ".join(str(r["seed"]) for r in group),
                 cell([r["baselines"]["labels-only"] for r in group]),
                 cell([r["round0"] for r in group])]
        for n in names:
            got = [r["variants"][n]["test_accuracy"] for r in group if n in r["variants"]]
            gains = [r["variants"][n]["test_accuracy"] - r["round0"] for r in group
                     if n in r["variants"]]
            cells += [cell(got), cell(gains)]
        cells.append(cell([r["baselines"]["all-labels"] for r in group]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = common.parser(__doc__, "runs/bench-rounds")
    p.add_argument("--data", default="fmnist")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:k=v,k=v")
    p.add_argument("--reuse-representation", help="a label run per seed ({seed} allowed)")
    p.add_argument("--reuse-all-labels", help="an all-labels label run per seed ({seed})")
    args = common.parse(p)
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    rows = []
    for seed in args.seeds:
        base, found = base_run(args, seed)
        row = {"labels_per_class": args.labels_per_class, "seed": seed, **found,
               "variants": {}, "machine": platform.processor() or platform.machine(),
               "date": date.today().isoformat()}
        for name, fields in variants:
            row["variants"][name] = run_variant(args, base, seed, name, fields)
            v = row["variants"][name]
            print(f"lpc {args.labels_per_class} seed {seed} {name}: round 1 "
                  f"{v['test_accuracy']:.4f} (round 0 {found['round0']:.4f})", flush=True)
        rows.append(row)
        rows = common.save_merged(args.out, rows, ("labels_per_class", "seed"))
    common.save_merged(args.out, rows, ("labels_per_class", "seed"),
                       table(rows, [n for n, _ in variants]))


if __name__ == "__main__":
    main()
