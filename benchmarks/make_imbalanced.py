"""A folder set whose unlabeled classes are not equally common: Fashion-MNIST (Debian's
dataset-fashion-mnist) with `--labeled` images per class labeled, and the unlabeled images of
class k kept at a share that falls geometrically from 1 to 1/`--ratio` (the order of the
classes drawn from the seed), as in the long-tailed semi-supervised benchmarks (DARP, CReST).

    python benchmarks/make_imbalanced.py runs/fmnist-lt --ratio 10 --seed 0

Writes ``labeled/<class>/``, ``unlabeled/``, ``test/<class>/`` (the whole balanced test set,
or `--test` per class) as PNG, and beside the folder ``<out>.truth.csv`` (the unlabeled
images' classes) and ``<out>.prior.json`` (each class's true share of the unlabeled images)."""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from make_shapes import all_labeled_copy  # noqa: E402

CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")


def idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def make(out: Path, fmnist: Path, labeled: int, ratio: float, test: int, seed: int,
         per_class: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    x, y = idx(fmnist / "train-images-idx3-ubyte.gz"), idx(fmnist / "train-labels-idx1-ubyte.gz")
    tx, ty = idx(fmnist / "t10k-images-idx3-ubyte.gz"), idx(fmnist / "t10k-labels-idx1-ubyte.gz")
    order = rng.permutation(len(CLASSES))  # order[r]: the class at rank r (most common first)
    keep = {int(c): ratio ** (-r / (len(CLASSES) - 1)) for r, c in enumerate(order)}
    truth, counts = [], {}
    for c, name in enumerate(CLASSES):
        members = rng.permutation(np.flatnonzero(y == c))
        rest = members[labeled:labeled + per_class if per_class else None]
        rest = rest[:round(len(rest) * keep[c])]
        counts[name] = len(rest)
        for i in members[:labeled]:
            write(out / "labeled" / name / f"{i}.png", x[i])
        for i in rest:
            rel = f"unlabeled/{i // 1000:02d}/{i}.png"
            write(out / rel, x[i])
            truth.append((rel, name))
        for i in np.flatnonzero(ty == c)[:test]:
            write(out / "test" / name / f"{i}.png", tx[i])
    with open(out.with_name(out.name + ".truth.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *sorted(truth)])
    total = sum(counts.values())
    prior = {name: n / total for name, n in counts.items()}
    out.with_name(out.name + ".prior.json").write_text(json.dumps(prior, indent=1))
    return prior


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fmnist", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--labeled", type=int, default=10, help="labeled images per class")
    parser.add_argument("--ratio", type=float, default=10.0,
                        help="most common class / rarest among the unlabeled images")
    parser.add_argument("--test", type=int, default=1000, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, help="at most this many unlabeled images of a "
                                                      "class before the ratio thins them")
    parser.add_argument("--all-labeled-copy", action="store_true",
                        help="also write <out>-all, every training image labeled")
    args = parser.parse_args()
    prior = make(args.out, args.fmnist, args.labeled, args.ratio, args.test, args.seed,
                 args.per_class)
    print(f"wrote {args.out}: unlabeled shares " + ", ".join(f"{k} {v:.1%}"
                                                            for k, v in prior.items()))
    if args.all_labeled_copy:
        truth = [tuple(line.split(",")) for line in
                 args.out.with_name(args.out.name + ".truth.csv").read_text().splitlines()[1:]]
        print(f"wrote {all_labeled_copy(args.out, truth)}")


if __name__ == "__main__":
    main()
