"""The candidates for a run's final labels, each with its held-out estimate, what the label
stage chose, and how many of the unlabeled images each gets right against the truth training
never read: the features' labels, the classifier (from scratch or the pretrained one,
whichever the run fine-tuned), and what pseudo_labels.csv holds.

    semigen label DATA --out runs/cnn
    semigen label DATA --out runs/lite --label.net efficientnet-lite0 ...
    python benchmarks/final_candidates.py runs/cnn runs/lite --truth DATA.truth.csv \\
        --all-labels runs/cnn-all runs/lite-all --out benchmarks/results/candidates

The estimates are the run's own (metrics.json); the truth only scores. Writes OUT/results.json
(merged by run) and OUT/table.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import save_merged
from score_folder_run import pct, read_csv

from semigen.config import from_dict
from semigen.data import load_dataset
from semigen.labeling import nets
from semigen.labeling.predict import predict


def score(run: Path, truth_csv: Path, all_labels: Path | None) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    state = torch.load(run / "checkpoints" / "label" / "latest.pt", weights_only=True)
    truth = read_csv(truth_csv)
    classes = state["classes"]
    cfg = from_dict(state["config"])
    data = load_dataset(cfg.data)
    known = np.array([i in truth for i in data.unlabeled.ids])
    scored = np.array(data.unlabeled.ids)[known]
    target = np.array([classes.index(truth[i]) for i in scored])
    classifier = predict(nets.from_checkpoint(state), data.unlabeled.images[known], "cpu")
    pseudo = read_csv(run / "pseudo_labels.csv")
    handed = np.array([classes.index(pseudo[i]) for i in scored])
    calibrate, label = metrics.get("calibrate", {}), metrics.get("label", {})
    represent = metrics.get("represent", {})
    row = {"run": str(run), "net": state["net"]["name"],
           "feature_labels_estimate": calibrate.get("feature_labels_estimate"),
           "classifier_estimate": calibrate.get("classifier_estimate"),
           "features_estimate_5fold": represent.get("estimated_accuracy"),
           "features": f"{represent.get('features_chosen')} {represent.get('labels_by')}",
           "chosen": label.get("final_labels"), "why": label.get("final_labels_why"),
           "classifier_right": float((classifier.argmax(1).numpy() == target).mean()),
           "handed_out_right": float((handed == target).mean()),
           "test_accuracy": label.get("test_accuracy"),
           "label_seconds": metrics.get("seconds", {}).get("label")}
    if state.get("feature_labels") is not None:
        ids = state.get("feature_label_ids") or data.unlabeled.ids
        rows = {i: k for k, i in enumerate(ids)}
        guess = state["feature_labels"].argmax(1).numpy()
        row["feature_labels_right"] = float(np.mean([guess[rows[i]] == t
                                                     for i, t in zip(scored, target, strict=True)]))
    if all_labels is not None:
        row["all_labels_test_accuracy"] = json.loads(
            (all_labels / "metrics.json").read_text())["label"].get("test_accuracy")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run | net | features' labels: estimate / right | classifier: estimate / right "
             "| chosen | handed out right | test | all-labels test | label stage |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        minutes = "–" if r["label_seconds"] is None else f"{r['label_seconds'] / 60:.1f} min"
        lines.append(
            f"| {Path(r['run']).name} | {r['net']} | {pct(r['feature_labels_estimate'])} / "
            f"{pct(r.get('feature_labels_right'))} | {pct(r['classifier_estimate'])} / "
            f"{pct(r['classifier_right'])} | {r['chosen']} | {pct(r['handed_out_right'])} | "
            f"{pct(r['test_accuracy'])} | {pct(r.get('all_labels_test_accuracy'))} | "
            f"{minutes} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--truth", type=Path, required=True)
    p.add_argument("--all-labels", type=Path, nargs="*", default=[],
                   help="a labels-only run on every true label, one per run (same order)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    alls = list(args.all_labels) + [None] * (len(args.runs) - len(args.all_labels))
    rows = [score(run, args.truth, a) for run, a in zip(args.runs, alls, strict=True)]
    merged = save_merged(args.out, rows, ("run",))
    save_merged(args.out, [], ("run",), table(merged))


if __name__ == "__main__":
    main()
