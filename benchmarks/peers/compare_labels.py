"""semigen's label stage beside the USB peers on the same split: test accuracy against minutes
of training, one figure per data set and labels-per-class, and a table.

    python benchmarks/peers/compare_labels.py --semigen [NAME=]RUN ... \\
        --peers OUT/freematch OUT/fixmatch ... --name fmnist --out docs/

semigen's curve comes from its run's stats.jsonl: the features' labels when the
self-supervised step ends, then the classifier's test accuracy every `label.eval_every` steps,
against the minutes since the stage's first record (its test evaluations included; the
peers' are not counted). A peer's from its result.json (`usb_labels.py`)."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def semigen_curve(run: Path) -> tuple[list[tuple[float, float]], float, dict]:
    """(minutes, test accuracy) points of a semigen label stage, its minutes, its split."""
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("stage") in ("represent", "calibrate", "label")]
    start = rows[0]["time"]
    points = []
    for r in rows:
        accuracy = r.get("features_test_accuracy", r.get("test_accuracy"))
        if accuracy is not None and (r.get("stage") != "label" or "event" not in r):
            points.append(((r["time"] - start) / 60, accuracy))
    split = json.loads((run / "split.json").read_text())
    return points, (rows[-1]["time"] - start) / 60, split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--semigen", nargs="+", required=True, metavar="[NAME=]RUN",
                   help="semigen label runs; runs of one split share a figure")
    p.add_argument("--peers", type=Path, nargs="+", default=[])
    p.add_argument("--name", default="Fashion-MNIST")
    p.add_argument("--out", type=Path, default=Path("docs"))
    a = p.parse_args()
    peers = [json.loads((d / "result.json").read_text()) for d in a.peers]
    lines = ["| labels per class | split seed | method | minutes | test accuracy | "
             "pseudo-labels right |", "| ---: | ---: | --- | ---: | ---: | ---: |"]
    splits: dict[tuple[int, int], list] = {}
    finals: dict[tuple[int, str], list[float]] = {}  # (labels per class, method): per split
    for given in a.semigen:  # NAME=RUN or RUN
        name, _, run = given.rpartition("=")
        points, minutes, split = semigen_curve(Path(run))
        metrics = json.loads((Path(run) / "metrics.json").read_text())["label"]
        key = (split.get("labels_per_class", len(split["labeled"]) // len(split["classes"])),
               split.get("split_seed"))  # a folder's split: the user's labels
        splits.setdefault(key, []).append((name or "semigen", points, minutes, metrics))
    for (lpc, seed), runs in splits.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, points, minutes, metrics in runs:
            ax.plot(*zip(*points, strict=True), "o-", label=name)
            finals.setdefault((lpc, name), []).append(metrics["test_accuracy"])
            lines.append(f"| {lpc} | {seed} | {name} | {minutes:.1f} | "
                         f"{metrics['test_accuracy']:.2%} | "
                         f"{metrics.get('pseudo_label_accuracy', float('nan')):.2%} |")
        for peer in peers:
            if (peer["labels_per_class"], peer["split_seed"]) != (lpc, seed):
                continue
            curve = peer["curve"]
            name = f"{peer['peer']}, {peer['net']}"
            ax.plot([c["minutes"] for c in curve], [c["test_accuracy"] for c in curve], "s--",
                    label=f"{name} (EMA)")
            ax.plot([c["minutes"] for c in curve], [c["test_accuracy_raw"] for c in curve],
                    "^:", label=f"{name} (raw weights)")
            for kind, suffix in (("EMA", ""), ("raw weights", "_raw")):
                finals.setdefault((lpc, f"{name}, {kind}"), []).append(
                    peer["test_accuracy" + suffix])
                lines.append(f"| {lpc} | {seed} | {name}, {kind} | {curve[-1]['minutes']:.1f} | "
                             f"{peer['test_accuracy' + suffix]:.2%} | "
                             f"{peer.get('pseudo_label_accuracy' + suffix, float('nan')):.2%} |")
        ax.set(xlabel="minutes of training (1 thread each, two runs at a time)",
               ylabel="test accuracy", ylim=(0, 1),
               title=f"{a.name}, {lpc} label(s) per class"
                     + ("" if seed is None else f", split seed {seed}"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        a.out.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        slug = a.name.lower().replace(" ", "-")
        which = "" if seed is None else f"_seed{seed}"
        fig.savefig(a.out / f"peers_{slug}_lpc{lpc}{which}.png", dpi=110)
        plt.close(fig)
    print("\n".join(lines))
    print("\n| labels per class | method | split seeds | test accuracy, mean ± sd |\n"
          "| ---: | --- | ---: | ---: |")
    for (lpc, name), values in sorted(finals.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        spread = f" ± {statistics.stdev(values):.2%}" if len(values) > 1 else ""
        print(f"| {lpc} | {name} | {len(values)} | {statistics.mean(values):.2%}{spread} |")


if __name__ == "__main__":
    main()
