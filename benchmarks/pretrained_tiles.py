"""Pretrained features from tiles at the images' own resolution: does a defect that is a pixel
wide at 224 px show in the features of a tile read at full size?

Each training image of a folder set is decoded at its own size (up to --side-full), cut into
a --grid x --grid of tiles, each tile read by EfficientNet-Lite0 at 224 px (its last feature
map mean- and max-pooled), and the tiles' features pooled for the image (mean and max over
the tiles: a defect lives in one tile). Beside the whole image read at 224 px. For each, the
features' labels two ways (label spreading, a logistic probe at C = 0.1), each with the
held-out estimate on the labeled images (what module 1 chooses by) and the unlabeled images
right (the set's truth CSV: shown, never used).

    python benchmarks/pretrained_tiles.py /work/data/elpv0 --truth /work/data/elpv0.truth.csv
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from feature_candidates import truth_of

from semigen.config import Config
from semigen.data import load_dataset
from semigen.labeling import pretrained, represent


def tiles_of(images: np.ndarray, grid: int) -> np.ndarray:
    """N x H x W x C images as N*grid*grid tiles (image-major)."""
    n, h, w, c = images.shape
    th, tw = h // grid, w // grid
    cut = images[:, :th * grid, :tw * grid].reshape(n, grid, th, grid, tw, c)
    return cut.transpose(0, 1, 3, 2, 4, 5).reshape(n * grid * grid, th, tw, c)


def scores(data, values: torch.Tensor, truth: np.ndarray) -> dict:
    labels, k = data.labeled.labels, len(data.classes)
    n = len(labels)
    links = represent.neighbour_graph(values)
    spread = represent.cross_validated_accuracy(links, np.arange(n), labels, k)
    found = represent.held_out_linear(values, labels, k)
    linear = represent.accuracy_held_out(found.held, found.probs, labels)
    spread_pool = represent.first_labels(data, links)[n:].argmax(1).numpy()
    linear_pool = represent.linear_labels(values, np.arange(n), labels, k)[n:].argmax(1).numpy()
    return {"spread": {"held_out": spread["estimated_accuracy"],
                       "pool": float((spread_pool == truth).mean())},
            "linear": {"held_out": linear["estimated_accuracy"],
                       "pool": float((linear_pool == truth).mean())}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--truth", required=True)
    p.add_argument("--grid", type=int, default=2)
    p.add_argument("--side-full", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = Config()
    cfg.data.source = args.data
    data = load_dataset(cfg.data)
    truth = truth_of(data, args.truth)
    net = pretrained.feature_network("efficientnet-lite0")
    found = {}
    start = time.perf_counter()
    whole = pretrained.features(net, pretrained.images_at(data, cfg.data, 224), 224, "cpu")
    found["whole image at 224 px"] = scores(data, represent.standardised(whole), truth) | {
        "seconds": round(time.perf_counter() - start)}
    print(json.dumps(found), flush=True)
    start = time.perf_counter()
    full = pretrained.images_at(data, cfg.data, args.side_full)
    per_tile = pretrained.features(net, tiles_of(full, args.grid), 224, "cpu")
    per_tile = per_tile.reshape(len(full), args.grid * args.grid, -1)
    pooled = torch.cat([per_tile.mean(1), per_tile.max(1).values], 1)
    name = f"{args.grid}x{args.grid} tiles of the {full.shape[1]} px image, each at 224 px"
    found[name] = scores(data, represent.standardised(pooled), truth) | {
        "seconds": round(time.perf_counter() - start)}
    found[name + ", with the whole image"] = scores(data, torch.cat(
        [represent.standardised(whole), represent.standardised(pooled)], 1), truth)
    print(json.dumps(found, indent=1), flush=True)


if __name__ == "__main__":
    main()
