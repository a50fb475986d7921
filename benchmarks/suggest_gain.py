"""`semigen suggest`: do the K suggested images, once labeled, help more than K random ones?

    python benchmarks/suggest_gain.py --data fmnist --preset quick --seeds 0 1 2 --k 50
    python benchmarks/suggest_gain.py --data digits --preset demo --seeds 0 1 2 --k 50

The user's workflow, on a built-in set written out as an image folder (labeled/<class>/,
unlabeled/, test/<class>/): `semigen label` on the few labels; `semigen suggest --n K`; the
suggested images' true labels go into a labels CSV and `semigen label` runs again from scratch.
The same with K images drawn at random from the unlabeled ones. Both retrains have the same
seed, network and budget, and run side by side. Writes OUT/results.json and prints Markdown
for BENCHMARKS.md."""

from __future__ import annotations

import csv
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import common
import cv2
import numpy as np

import semigen
from semigen.api import make_config
from semigen.data import folder_name, load_dataset


def write_folder(data_name: str, labels_per_class: int, seed: int, root: Path) -> dict:
    """The built-in split as a user's folder; returns {unlabeled path: true class name}."""
    data = load_dataset(make_config(data_name, labels_per_class=labels_per_class,
                                    split_seed=seed).data)
    truth = {}
    parts = [("labeled", data.labeled, data.labeled.labels), ("test", data.test, data.test.labels),
             ("unlabeled", data.unlabeled, data.unlabeled_truth)]
    for part, images, labels in parts:
        for i, (image, label) in enumerate(zip(images.images, labels, strict=True)):
            name = data.classes[label]
            path = (f"{part}/{i:05d}.png" if part == "unlabeled"
                    else f"{part}/{folder_name(name)}/{i:05d}.png")
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / path), image[..., ::-1] if image.shape[2] == 3 else image)
            if part == "unlabeled":
                truth[path] = folder_name(name)  # the class as the folder spells it
    return truth


def retrain(args, root: Path, out: Path, seed: int, picked: list[str], truth: dict) -> float:
    labels = out.with_suffix(".csv")
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *((p, truth[p]) for p in picked)])
    metrics = semigen.label(str(root), out=str(out), preset=args.preset, seed=seed,
                            labels=str(labels), data__hflip=False, run__progress=False,
                            **args.set)
    return metrics["test_accuracy"]


def run_one(args, seed: int) -> dict:
    work = Path(args.out) / f"seed{seed}"
    root = work / "data"
    truth = write_folder(args.data, args.labels_per_class, seed, root)
    start = time.perf_counter()
    base = semigen.label(str(root), out=str(work / "base"), preset=args.preset, seed=seed,
                         data__hflip=False, run__progress=False, **args.set)
    suggested = [r["path"] for r in semigen.suggest(work / "base", args.k, work / "suggest.csv",
                                                    seed)]
    random = np.random.default_rng(seed).choice(sorted(truth), args.k, replace=False).tolist()
    # The two retrains are independent: side by side, in two processes.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        arms = {name: pool.submit(retrain, args, root, work / name, seed, picked, truth)
                for name, picked in (("suggested", suggested), ("random", random))}
    return {"seed": seed, "base": base["test_accuracy"],
            "suggested": arms["suggested"].result(), "random": arms["random"].result(),
            "suggested_classes": sorted({truth[p] for p in suggested}),
            "minutes": (time.perf_counter() - start) / 60}


def markdown(results: list[dict], args) -> str:
    def row(name, key):
        values = [r[key] * 100 for r in results]
        mean = (f"{values[0]:.2f}" if len(values) == 1
                else f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
        return f"| {name} | {mean} | " + " | ".join(f"{v:.2f}" for v in values) + " |"
    seeds = " ".join(str(r["seed"]) for r in results)
    settings = "".join(f" --set {k}={v}" for k, v in args.set.items())
    gain = [(r["suggested"] - r["random"]) * 100 for r in results]
    return "\n".join([
        f"`python benchmarks/suggest_gain.py --data {args.data} --preset {args.preset} --seeds "
        f"{seeds} --k {args.k}{settings}`, {date.today().isoformat()}; "
        f"{args.labels_per_class} labels per class, then {args.k} more", "",
        "| labels | test accuracy % | " + " | ".join(f"seed {r['seed']}" for r in results) + " |",
        "| --- | ---: |" + " ---: |" * len(results),
        row(f"the first {args.labels_per_class} per class", "base"),
        row(f"+ {args.k} random", "random"), row(f"+ {args.k} suggested", "suggested"), "",
        f"Suggested minus random, per seed: {', '.join(f'{g:+.2f}' for g in gain)} points "
        f"(mean {statistics.mean(gain):+.2f})."])


def main() -> None:
    parser = common.parser(__doc__, "runs/bench-suggest")
    parser.add_argument("--data", default="fmnist")
    parser.add_argument("--k", type=int, default=50)
    args = common.parse(parser)
    for seed in args.seeds:
        result = run_one(args, seed)
        print(json.dumps(result), flush=True)
        # Seeds may run as separate processes at once; each adds its row to one results.json.
        results = common.save_merged(args.out, [result], ("seed",))
    common.save(args.out, results, markdown(results, args))


if __name__ == "__main__":
    main()
