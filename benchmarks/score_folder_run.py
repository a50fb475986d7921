"""What a run on a folder set achieved, scored against the truth training never saw: its
pseudo-labels' accuracy, mean confidence and per-class recall (from ``<data>.truth.csv``), the
class shares it estimated among the unlabeled images against the true ones, test accuracy
beside its labels-only baseline and an all-labels run, and the time of each stage.

    python benchmarks/score_folder_run.py runs/elpv-run --truth runs/elpv.truth.csv \\
        --all-labels runs/elpv-all-run --out benchmarks/results/elpv

The result is OUT/results.json (one row per run scored, merged) and OUT/table.md."""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
from common import save_merged


def read_csv(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


def score(run: Path, truth_csv: Path, all_labels: Path | None) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    classes = json.loads((run / "split.json").read_text())["classes"]
    truth = read_csv(truth_csv)
    with open(run / "pseudo_labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["path"] in truth]
    right = np.array([r["label"] == truth[r["path"]] for r in rows])
    confidence = np.array([float(r["confidence"]) for r in rows])
    true_count = Counter(truth[r["path"]] for r in rows)
    recall = {c: float(np.mean([ok for r, ok in zip(rows, right, strict=True)
                                if truth[r["path"]] == c])) if true_count[c] else None
              for c in classes}
    given = Counter(r["label"] for r in rows)
    represent = metrics.get("represent", {})
    split = json.loads((run / "split.json").read_text())
    row = {"run": str(run), "labels_per_class": min(Counter(split["labeled_labels"]).values()),
           "pseudo_label_accuracy": float(right.mean()),
           "mean_confidence": float(confidence.mean()),
           "recall": recall, "balanced_accuracy": float(np.mean([v for v in recall.values()
                                                                  if v is not None])),
           "true_shares": {c: true_count[c] / len(rows) for c in classes},
           "estimated_shares": dict(zip(classes, represent.get(
               "class_prior_estimate", represent.get("class_prior", [])), strict=False)),
           "pseudo_label_shares": {c: given[c] / len(rows) for c in classes},
           "class_prior_setting": represent.get("class_prior_setting"),
           "test_accuracy": metrics.get("label", {}).get("test_accuracy"),
           "labels_only_test_accuracy": metrics.get("baseline-labels-only", {}).get(
               "test_accuracy"),
           "seconds": metrics.get("seconds", {}),
           "label_seconds": metrics.get("seconds", {}).get("label"),
           "images": {k: v for k, v in metrics.get("evaluate", {}).get("images", {}).items()
                      if k in ("fid", "kid", "precision", "recall", "density", "coverage",
                               "class_consistency", "worst_class_consistency", "n_fake",
                               "n_real", "real", "feature_network")},
           "teaching": metrics.get("evaluate", {}).get("teaching", {})}
    if all_labels is not None:
        row["all_labels_test_accuracy"] = json.loads((all_labels / "metrics.json").read_text()
                                                     )["label"].get("test_accuracy")
    return row


def pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def table(rows: list[dict]) -> str:
    lines = ["| run | labels-only | semi | all-labels | pseudo-labels right | balanced | mean "
             "confidence | label stage |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        minutes = "–" if r["label_seconds"] is None else f"{r['label_seconds'] / 60:.1f} min"
        lines.append(f"| {Path(r['run']).name} | {pct(r['labels_only_test_accuracy'])} | "
                     f"{pct(r['test_accuracy'])} | {pct(r.get('all_labels_test_accuracy'))} | "
                     f"{pct(r['pseudo_label_accuracy'])} | {pct(r['balanced_accuracy'])} | "
                     f"{pct(r['mean_confidence'])} | {minutes} |")
    lines += ["", "| run | class | true share | estimated | pseudo-labels | recall |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for c, share in r["true_shares"].items():
            lines.append(f"| {Path(r['run']).name} | {c} | {share:.1%} | "
                         f"{pct(r['estimated_shares'].get(c))} | "
                         f"{r['pseudo_label_shares'][c]:.1%} | "
                         f"{pct(r['recall'][c])} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--truth", type=Path, required=True)
    p.add_argument("--all-labels", type=Path, help="a labels-only run on every true label")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = [score(run, args.truth, args.all_labels) for run in args.runs]
    merged = save_merged(args.out, rows, ("run",))
    save_merged(args.out, [], ("run",), table(merged))


if __name__ == "__main__":
    main()
