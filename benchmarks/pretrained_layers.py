"""Where in EfficientNet-Lite0, and at what size, a folder set's detail shows: an exploration
behind module 1's pretrained candidate (the last feature map, mean- and max-pooled, at the
files' own size within 64-224 px).

For one folder set read at `--side` px, the features of several blocks of the frozen network
(each mean- and max-pooled) are scored two ways against the truth CSV: the labels spread over
them (held-out estimate on the labeled images, unlabeled images right) and a logistic
regression on the labeled images (5-fold held-out estimate, unlabeled and test images right).

    python benchmarks/pretrained_layers.py /work/data/elpv0 --truth /work/data/elpv0.truth.csv \\
        --side 224
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from semigen.config import Config
from semigen.data import load_dataset
from semigen.labeling import pretrained, represent

BLOCKS = (3, 5, 8, 11, 15)  # of Lite0's 16 blocks; "head": the last feature map


def block_features(images: np.ndarray, side: int) -> dict[str, torch.Tensor]:
    net = pretrained.feature_network("efficientnet-lite0")
    taps = {}
    for i in BLOCKS:
        net.net._blocks[i].register_forward_hook(
            lambda mod, inp, out, i=i: taps.__setitem__(str(i), out))
    found = {}
    with torch.no_grad():
        for start in range(0, len(images), 32):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + 32]))
            x = batch.permute(0, 3, 1, 2).float() / 127.5 - 1
            taps["head"] = net.net.extract_features(net.input(x))
            for name, fmap in taps.items():
                found.setdefault(name, []).append(torch.cat([fmap.mean((2, 3)),
                                                             fmap.amax((2, 3))], 1))
    return {k: torch.cat(v) for k, v in found.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--truth", required=True)
    p.add_argument("--side", type=int, default=224)
    args = p.parse_args()
    cfg = Config()
    cfg.data.source, cfg.data.max_side = args.data, args.side
    data = load_dataset(cfg.data)
    with open(args.truth, newline="") as f:
        truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    pool_truth = np.array([data.classes.index(truth[i]) for i in data.unlabeled.ids])
    n, y = len(data.labeled), data.labeled.labels
    train = block_features(np.concatenate([data.labeled.images, data.unlabeled.images]),
                           args.side)
    test = block_features(data.test.images, args.side)
    known = np.concatenate([y, np.full(len(data.unlabeled), -1)])
    print("| block | spread: held out | spread: unlabeled | linear: held out | "
          "linear: unlabeled | linear: test |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, values in train.items():
        scaled = represent.standardised(values)
        links = represent.neighbour_graph(scaled)
        held = represent.cross_validated_accuracy(links, np.arange(n), y, len(data.classes))
        spread = represent.propagate(links, known, len(data.classes))[n:].argmax(1).numpy()
        mean, std = values.mean(0), values.std(0) + 1e-6
        x, t = ((values - mean) / std).numpy(), ((test[name] - mean) / std).numpy()
        model = LogisticRegression(max_iter=3000, C=0.1)
        linear_held = cross_val_score(model, x[:n], y, cv=StratifiedKFold(
            5, shuffle=True, random_state=0)).mean()
        model.fit(x[:n], y)
        print(f"| {name} | {held['estimated_accuracy']:.1%} | {(spread == pool_truth).mean():.1%}"
              f" | {linear_held:.1%} | {(model.predict(x[n:]) == pool_truth).mean():.1%} | "
              f"{(model.predict(t) == data.test.labels).mean():.1%} |", flush=True)


if __name__ == "__main__":
    main()
