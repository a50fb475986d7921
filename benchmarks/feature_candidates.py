"""Module 1's feature candidates on finished label runs: does the choice on held-out labels pick
the best on test?

For each run (its representation checkpoint and config), the candidates the label stage chose
among (`represent.candidates`: self-supervised, pretrained, both) are rebuilt; the pretrained
features come from the features cache the run filled. For each candidate, three figures of the
labels spread over it: the held-out estimate (what the stage chooses by), the unlabeled images
right (known truth: the built-in's, or a folder set's truth CSV) and the test images right
(the test images joined to the graph as unlabeled nodes). Beside spreading, a second way from
features to labels, measured the same three ways: a logistic regression on the labeled images'
(standardised) features alone ("linear").

    python benchmarks/feature_candidates.py 'runs/b/semi-seed{seed}' --seeds 0 1 2 \\
        [--truth 'data/elpv{seed}.truth.csv'] --out runs/b/candidates
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from semigen.config import from_dict, load_yaml
from semigen.data import load_dataset
from semigen.labeling import nets, pretrained, represent
from semigen.run import read_metrics


def pretrained_of(cfg, data):
    name = pretrained.resolved(cfg.label.pretrained)
    if name is None:
        return None, None
    lab = cfg.label
    train, _ = pretrained.cached_features(data, cfg.data, name, lab.pretrained_weights,
                                          lab.pretrained_size, "cpu")
    side = pretrained.input_side(data, lab.pretrained_size)
    test = pretrained.features(pretrained.feature_network(name, lab.pretrained_weights),
                               pretrained.images_at(data, cfg.data, side, ("test",)), side, "cpu")
    return train, test


def truth_of(data, truth_csv: str | None) -> np.ndarray:
    if data.unlabeled_truth is not None:
        return data.unlabeled_truth
    with open(truth_csv, newline="") as f:
        truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    return np.array([data.classes.index(truth[i]) for i in data.unlabeled.ids])


def linear_labels(train: torch.Tensor, labels: np.ndarray, fit_rows: np.ndarray,
                  predict: torch.Tensor) -> np.ndarray:
    mean, std = train.mean(0), train.std(0) + 1e-6
    model = LogisticRegression(max_iter=3000, C=0.1)
    model.fit(((train[fit_rows] - mean) / std).numpy(), labels)
    return model.predict(((predict - mean) / std).numpy())


def score_candidate(data, values: torch.Tensor, test_values: torch.Tensor, truth: np.ndarray
                    ) -> dict:
    n_lab, n_train, classes = len(data.labeled), len(values), len(data.classes)
    labeled = np.arange(n_lab)
    allowed = data.held_out_allowed()
    links = represent.neighbour_graph(values)
    found = {"spread": represent.cross_validated_accuracy(links, labeled, data.labeled.labels,
                                                          classes, allowed=allowed)}
    spread = represent.first_labels(data, links)[n_lab:].argmax(1).numpy()
    found["spread"]["pool"] = float((spread == truth).mean())
    joint = represent.neighbour_graph(torch.cat([values, test_values]))
    known = np.concatenate([data.labeled.labels, np.full(len(values) - n_lab + len(test_values),
                                                         -1)])
    guess = represent.propagate(joint, known, classes)[n_train:].argmax(1).numpy()
    found["spread"]["test"] = float((guess == data.test.labels).mean())
    # the same folds as the held-out estimate of spreading
    fold = represent.folds_per_class(data.labeled.labels, classes, 5, 0, allowed)
    right = total = 0
    for f in range(fold.max() + 1):
        fit = np.flatnonzero(fold != f)
        held = np.flatnonzero(fold == f)
        guess = linear_labels(values, data.labeled.labels[fit], fit, values[held])
        right += int((guess == data.labeled.labels[held]).sum())
        total += len(held)
    all_rows = np.arange(n_lab)
    found["linear"] = {
        "estimated_accuracy": right / total,
        "pool": float((linear_labels(values, data.labeled.labels, all_rows, values[n_lab:])
                       == truth).mean()),
        "test": float((linear_labels(values, data.labeled.labels, all_rows, test_values)
                       == data.test.labels).mean())}
    return found


def finished_runs(doc: str):
    """The command line of a script on finished label runs (RUNS with {seed}, --seeds, --truth,
    --out), and each run's seed, directory, config, data and training images."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("runs", help="label run directories, with {seed}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--truth", help="a folder set's truth CSV, with {seed}")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)

    def each():
        for seed in args.seeds:
            run = args.runs.format(seed=seed)
            cfg = from_dict(load_yaml(f"{run}/config.yaml"))
            data = load_dataset(cfg.data)
            yield seed, run, cfg, data, np.concatenate([data.labeled.images,
                                                        data.unlabeled.images])
    return args, each()


def main() -> None:
    args, runs = finished_runs(__doc__)
    results = []
    for seed, run, cfg, data, images in runs:
        net = represent.load_representation(run, cfg, data, "cpu")  # the run's own, as it was
        own, own_test = (nets.embed(net, x, "cpu") for x in (images, data.test.images))
        other, other_test = pretrained_of(cfg, data)
        train_sets = represent.candidates(own, other)
        test_sets = represent.candidates(own_test, other_test)
        # the test rows standardised with the training images' statistics, as one would
        if other is not None:
            scaled = (other_test - other.mean(0)) / (other.std(0) + 1e-6)
            if len(other) > represent.REDUCE_ABOVE and other.shape[1] > represent.PRINCIPAL:
                mean, vectors = represent.principal_directions(represent.standardised(other))
                scaled = (scaled - mean) @ vectors
            test_sets["pretrained"] = scaled
            test_sets["both"] = torch.cat([nn.functional.normalize(own_test, dim=1),
                                           nn.functional.normalize(scaled, dim=1)], 1)
        truth = truth_of(data, args.truth and args.truth.format(seed=seed))
        chosen = read_metrics(run).get("represent", {}).get("features_chosen")
        for name in train_sets:
            found = score_candidate(data, train_sets[name], test_sets[name], truth)
            for how, figures in found.items():
                row = {"seed": seed, "features": name, "labels_by": how,
                       "chosen": name == chosen and how == "spread",
                       "held_out": figures["estimated_accuracy"], "pool": figures["pool"],
                       "test": figures["test"]}
                results.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| features | labels by | held-out estimate | unlabeled right | test right | "
             "chosen (seeds) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    keys = sorted({(r["features"], r["labels_by"]) for r in results},
                  key=lambda k: (k[1], list(train_sets).index(k[0])))
    for name, how in keys:
        rows = [r for r in results if r["features"] == name and r["labels_by"] == how]

        def cell(key, rows=rows):
            values = [100 * r[key] for r in rows]
            return f"{statistics.mean(values):.1f}" + (
                f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")
        lines.append(f"| {name} | {how} | {cell('held_out')} | {cell('pool')} | "
                     f"{cell('test')} | {sum(r['chosen'] for r in rows)} |")
    table = "\n".join(lines)
    Path(args.out, "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
