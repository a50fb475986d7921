"""How far labels spread over the learned features (label spreading's alpha), chosen on what a
user has: the labeled images, each held out in turn (`represent.cross_validated_accuracy`).

For each label run given (its representation checkpoint, ``RUN/checkpoints/represent/``), the
features of every training image are computed once, then the labels are spread at each alpha.
Two figures per alpha: the held-out accuracy on the labels (what chooses), and, for built-ins,
the accuracy on the unlabeled pool against its held-out truth (shown, never used to choose).

    python benchmarks/spread_alpha.py 'runs/bench-label/semi-seed{seed}' --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from torch import nn

from semigen import checkpoint
from semigen.config import from_dict, load_yaml
from semigen.data import load_dataset
from semigen.labeling import nets, represent
from semigen.run import Layout


def features_of_run(run: str):
    cfg = from_dict(load_yaml(f"{run}/config.yaml"))
    data = load_dataset(cfg.data)
    lab = cfg.label
    net = nets.build(lab.backbone or lab.net, data.shape[2], len(data.classes), lab.width)
    encoder = nn.Sequential(net.features, represent.projector(net.head.in_features))
    state = checkpoint.load(Layout(run).checkpoint(represent.STAGE))
    encoder.load_state_dict(state["model"])
    images = np.concatenate([data.labeled.images, data.unlabeled.images])
    represent.recalibrate_batch_norm(net.features, images, "cpu")
    return data, represent.features_of(net.features, images, "cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", help="label run directories, with {seed}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.5, 0.9, 0.99])
    args = p.parse_args()
    rows = {a: {"held_out": [], "pool": []} for a in args.alphas}
    for seed in args.seeds:
        data, features = features_of_run(args.runs.format(seed=seed))
        labeled = np.arange(len(data.labeled))
        n_classes = len(data.classes)
        for alpha in args.alphas:
            represent.SPREAD = alpha
            found = represent.cross_validated_accuracy(features.links, labeled,
                                                       data.labeled.labels, n_classes)
            rows[alpha]["held_out"].append(found["estimated_accuracy"])
            if data.unlabeled_truth is not None:
                spread = represent.first_labels(data, features.links)[len(data.labeled):]
                pool = (spread.argmax(1).numpy() == data.unlabeled_truth).mean()
                rows[alpha]["pool"].append(float(pool))
            print(f"seed {seed} alpha {alpha}: held-out labels {found['estimated_accuracy']:.3f}"
                  + (f", pool {rows[alpha]['pool'][-1]:.3f}" if rows[alpha]["pool"] else ""),
                  flush=True)
    print("\n| alpha | held-out labels (chooses), mean | per seed | unlabeled pool (shown) |")
    print("| ---: | ---: | --- | ---: |")
    for alpha, found in rows.items():
        pool = f"{100 * statistics.mean(found['pool']):.1f}" if found["pool"] else "-"
        print(f"| {alpha} | {100 * statistics.mean(found['held_out']):.1f} | "
              + " / ".join(f"{100 * v:.0f}" for v in found["held_out"]) + f" | {pool} |")


if __name__ == "__main__":
    main()
