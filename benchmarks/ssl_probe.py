"""Exploration: how much self-supervised features learned from every training
image (SimCLR) help the few labels, as nearest-neighbour accuracy against training minutes.

    python benchmarks/make_shapes.py runs/shapes
    python benchmarks/ssl_probe.py runs/shapes --truth runs/shapes.truth.csv --minutes 6
    python benchmarks/ssl_probe.py fmnist --labels-per-class 10 --minutes 6 --no-rotate

Not a semigen stage yet: it trains the label stage's small CNN (its features, plus a projection
head) with `semigen.labeling.losses.contrastive_loss` on two augmented views of each image, and
every `--every` seconds scores its features by the labeled images' nearest neighbours (cosine),
on the test images and, where the truth is known, on the unlabeled ones. Step 0 is the random
network; raw pixels are shown for scale. Prints a Markdown table."""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semigen.config import DataConfig
from semigen.data import load_dataset, to_float
from semigen.data.transforms import contrastive_views
from semigen.labeling import losses, nets


@torch.no_grad()
def features(encoder: nn.Module, images: np.ndarray, batch: int = 1000) -> torch.Tensor:
    encoder.eval()
    out = [encoder(to_float(torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2)))
           for i in range(0, len(images), batch)]
    encoder.train()
    return F.normalize(torch.cat(out), dim=1)


def nearest_label(reference: torch.Tensor, labels: np.ndarray, query: torch.Tensor,
                  k: int = 1) -> np.ndarray:
    """The majority label of each query's k most similar reference rows (cosine)."""
    top = (query @ reference.T).topk(min(k, len(reference)), dim=1).indices
    votes = torch.from_numpy(labels)[top]
    return torch.mode(votes, dim=1).values.numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--truth", help="CSV path,label of the unlabeled images (make_shapes.py)")
    p.add_argument("--minutes", type=float, default=6)
    p.add_argument("--every", type=float, default=60, help="seconds between scores")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--width", type=int, default=32, help="the small CNN's first channels")
    p.add_argument("--crop-scale", type=float, default=0.3, help="smallest crop's area share")
    p.add_argument("--no-rotate", action="store_true")
    p.add_argument("--no-colour", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    data = load_dataset(DataConfig(source=args.data, labels_per_class=args.labels_per_class))
    truth = data.unlabeled_truth
    if args.truth:
        with open(args.truth, newline="") as f:
            by_path = {r["path"]: data.classes.index(r["label"]) for r in csv.DictReader(f)}
        truth = np.array([by_path[i] for i in data.unlabeled.ids])
    images = np.concatenate([data.labeled.images, data.unlabeled.images])
    rng = np.random.default_rng(0)
    probe = rng.permutation(len(data.unlabeled))[:5000]
    test_sample = rng.permutation(len(data.test))[:5000] if data.test is not None else None

    def score(name: str, embed) -> dict:
        reference = embed(data.labeled.images)
        found = {"at": name}
        if test_sample is not None:
            guess = nearest_label(reference, data.labeled.labels,
                                  embed(data.test.images[test_sample]))
            found["test"] = float((guess == data.test.labels[test_sample]).mean())
        if truth is not None:
            guess = nearest_label(reference, data.labeled.labels,
                                  embed(data.unlabeled.images[probe]))
            found["unlabeled"] = float((guess == truth[probe]).mean())
        print(found, flush=True)
        return found

    rows = [score("raw pixels", lambda x: F.normalize(
        torch.from_numpy(x).reshape(len(x), -1).float() - 127.5, dim=1))]
    encoder = nets.SmallCNN(data.shape[2], len(data.classes), width=args.width).features
    width = encoder(torch.zeros(1, data.shape[2], *data.shape[:2])).shape[1]
    head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 64))
    rows.append(score("random network, 0 min", lambda x: features(encoder, x)))

    augment = contrastive_views(data.shape, hflip=True, rotate=not args.no_rotate,
                                colour=not args.no_colour, crop_scale=args.crop_scale)
    pool = torch.from_numpy(images).permute(0, 3, 1, 2)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=args.lr,
                                 weight_decay=1e-6)
    g = torch.Generator().manual_seed(args.seed)
    start = last = time.perf_counter()
    for step in range(1, 10**9):
        batch = pool[torch.randint(len(pool), (args.batch,), generator=g)].float() / 255
        view1, view2 = augment(batch) * 2 - 1, augment(batch) * 2 - 1
        z = head(encoder(torch.cat([view1, view2])))
        loss = losses.contrastive_loss(*z.chunk(2), temperature=args.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        if now - last >= args.every or now - start >= 60 * args.minutes:
            last = now
            found = score(f"SimCLR, {(now - start) / 60:.1f} min, step {step}",
                          lambda x: features(encoder, x))
            rows.append(found | {"loss": loss.item()})
            if now - start >= 60 * args.minutes:
                break

    print(f"\n{args.data}: {len(data.labeled)} labels, {len(images)} training images, "
          f"batch {args.batch}, 1-NN (cosine) on the labeled images\n")
    print("| features | test accuracy % | unlabeled accuracy % | loss |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        cells = [f"{100 * r[k]:.1f}" if k in r else "" for k in ("test", "unlabeled")]
        loss = f"{r['loss']:.2f}" if "loss" in r else ""
        print(f"| {r['at']} | {cells[0]} | {cells[1]} | {loss} |")


if __name__ == "__main__":
    main()
