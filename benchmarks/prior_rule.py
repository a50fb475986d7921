"""The class prior on finished label runs: what EM's estimate gives beside the labeled shares.

For each run (its representation checkpoint, config and chosen features and way to labels),
the features' labels are made again as the label stage made them; then EM's estimate of the
unlabeled images' class shares, how far it lies from the labeled shares and how far the labels'
own shares lie (`prior.predicted_shares`). Where the
truth is known (a built-in, or a folder set's truth CSV), the features' labels under the
estimate and under the labeled shares: right, and expected calibration error (ECE, 15 bins).

    python benchmarks/prior_rule.py 'runs/b/semi-seed{seed}' --seeds 0 1 2 \\
        [--truth 'data/elpv{seed}.truth.csv'] --out runs/b/prior
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from feature_candidates import finished_runs, truth_of
from torchmetrics.functional.classification import multiclass_calibration_error

from semigen.labeling import nets, pretrained, prior, represent
from semigen.run import read_metrics


def figures(probs: torch.Tensor, truth: np.ndarray) -> dict:
    target = torch.as_tensor(truth)
    return {"right": float((probs.argmax(1) == target).float().mean()),
            "ece": float(multiclass_calibration_error(probs, target, probs.shape[1], n_bins=15))}


def save(rows: list[dict], out: str) -> None:
    """The rows as `out`/results.json."""
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "results.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    args, runs = finished_runs(__doc__)
    rows = []
    for seed, run, cfg, data, images in runs:
        own = nets.embed(represent.load_representation(run, cfg, data, "cpu"), images, "cpu")
        name, lab = pretrained.resolved(cfg.label.pretrained), cfg.label
        other = None if name is None else pretrained.cached_features(
            data, cfg.data, name, lab.pretrained_weights, lab.pretrained_size, "cpu")[0]
        found = read_metrics(run).get("represent", {})
        chosen = found.get("features_chosen", "self-supervised")
        how = found.get("labels_by", "spread")
        _, targets, _, _, _ = represent.chosen_features(data, own, other, chosen, how)
        labels = targets[len(data.labeled):]
        share = prior.labeled_prior(data.labeled.labels, len(data.classes))
        estimate = prior.estimate_prior(labels, share)
        predicted = prior.predicted_shares(labels)
        truth = truth_of(data, args.truth and args.truth.format(seed=seed))
        row = {"run": run, "features": chosen, "labels_by": how,
               "shift": prior.shift(estimate, share),
               "shift_predicted": prior.shift(predicted, share),
               "true_shift": prior.shift(prior.labeled_prior(truth, len(data.classes)), share),
               "estimate": [round(v, 3) for v in estimate.tolist()],
               "with_estimate": figures(prior.reweighted(labels, share, estimate), truth),
               "with_labeled_shares": figures(labels, truth)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    save(rows, args.out)


if __name__ == "__main__":
    main()
