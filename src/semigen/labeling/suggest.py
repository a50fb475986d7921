"""`semigen suggest RUN --n K --out F.csv`: which unlabeled images to label next.

Uncertain and diverse: the classifier's margin (top probability minus the second) ranks the
unlabeled images; among the ``POOL x K`` least certain, k-means on the classifier's features
makes K groups, and each group offers its least certain image. Uncertainty alone would pick K
near-copies from one confused region; the groups spread the picks over the data."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans

from ..config import load_run_config
from ..data import DataError, added, load_dataset, to_float
from ..data.cells import safe
from ..run import Layout, as_run_path, check_output, load_stage, replacing
from . import nets

log = logging.getLogger("semigen")
POOL = 10  # candidates per suggestion: the least certain 10 K images are clustered


@torch.no_grad()
def features_and_probs(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512
                       ) -> tuple[np.ndarray, np.ndarray]:
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2))
        f = model.features(x)
        feats.append(f)
        probs.append(model.head(f).softmax(dim=1))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def choose(features: np.ndarray, probs: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """Indices of `k` uncertain and mutually different images, most uncertain first."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    pool = np.argsort(margin, kind="stable")[:min(len(margin), POOL * k)]
    if len(pool) <= k:
        return pool.tolist()
    unit = features[pool] / np.linalg.norm(features[pool], axis=1, keepdims=True).clip(1e-8)
    groups = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(unit)
    picks = [pool[groups == g][np.argmin(margin[pool[groups == g]])] for g in range(k)]
    return sorted(picks, key=lambda i: margin[i])


def suggest(run_path: str | Path, n: int, out: str | Path, seed: int = 0,
            overwrite: bool = False) -> list[dict]:
    """Write the `n` suggestions to `out` (path, predicted label, confidence, margin, rank), a
    new file (or any, with `overwrite`)."""
    run_path = as_run_path(run_path)
    out = check_output(out, run_path, overwrite)
    if n < 1:
        raise DataError(f"--n must be >= 1 (got {n})")
    _, state = load_stage(run_path, "label", "latest", "classifier")
    model = nets.from_checkpoint(state)
    data = load_dataset(load_run_config(Layout(run_path).config).data)
    if not len(data.unlabeled):
        raise DataError(f"{run_path}: its data has no unlabeled images to suggest")
    features, probs = features_and_probs(model, data.unlabeled.images)
    # the images labeled in `semigen review` since the split
    decided = added.read(Layout(run_path).added_labels)
    open_ids = np.array([i for i, image in enumerate(data.unlabeled.ids) if image not in decided],
                        dtype=np.int64)
    picks = open_ids[choose(features[open_ids], probs[open_ids], n, seed)].tolist()
    top2 = np.sort(probs, axis=1)[:, -2:]
    rows = [{"path": data.unlabeled.ids[i], "predicted": data.classes[int(probs[i].argmax())],
             "confidence": round(float(top2[i, 1]), 4),
             "margin": round(float(top2[i, 1] - top2[i, 0]), 4), "rank": rank}
            for rank, i in enumerate(picks, start=1)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out, new=not overwrite) as f:  # a file written meanwhile: refused
        writer = csv.DictWriter(f, fieldnames=["path", "predicted", "confidence", "margin",
                                               "rank"])
        writer.writeheader()
        writer.writerows({k: safe(v) for k, v in row.items()} for row in rows)
    log.info(f"suggested {len(rows)} of {len(data.unlabeled)} unlabeled images to label next: "
             f"{out} (add their labels, e.g. to a labels CSV, and run again)")
    return rows
