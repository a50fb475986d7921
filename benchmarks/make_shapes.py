"""A folder data set in which only the shape tells the class: the kind module 1
must label from features.

    python benchmarks/make_shapes.py runs/shapes --labeled 5 --unlabeled 3000 --test 200
    python benchmarks/make_shapes.py runs/shapes1 --seed 1 --all-labeled-copy

RGB, 32 px. Five classes (circle, square, triangle, star, cross); the shape's colour, the
background (a plain colour or a gradient between two), the size, the position and the rotation
are drawn at random for every image, so none of them carries the class. Writes the folder
contract (``labeled/<class>/``, ``unlabeled/<batch>/<sub>/`` in png and jpg, ``test/<class>/``)
and, outside the data folder, ``<out>.truth.csv`` with the unlabeled images' true classes, for
measuring pseudo-label accuracy (training never sees it)."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross")
SIZE = 32
SCALE = 8  # drawn at 8x and shrunk, for smooth edges


def outline(shape: str) -> np.ndarray:
    """The shape's corners on the unit circle (circle: a 48-gon), centred at 0."""
    if shape == "circle":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75
    if shape == "triangle":
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([np.cos(angles) * radius, np.sin(angles) * radius], 1)
    if shape == "cross":
        a, b = 0.33, 1.0
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                         [-a, a], [-b, a], [-b, -a], [-a, -a]])
    raise ValueError(shape)


def background(rng: np.random.Generator) -> np.ndarray:
    side = SIZE * SCALE
    first, second = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    if rng.random() < 0.5:
        return np.broadcast_to(first, (side, side, 3)).astype(np.uint8).copy()
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:side, 0:side] / side - 0.5
    t = np.clip((x * np.cos(angle) + y * np.sin(angle)) + 0.5, 0, 1)[..., None]
    return (first * (1 - t) + second * t).astype(np.uint8)


def draw(shape: str, rng: np.random.Generator) -> np.ndarray:
    """One RGB SIZE x SIZE image of `shape`, everything but the shape drawn at random."""
    image = background(rng)
    radius = rng.uniform(0.2, 0.42) * SIZE * SCALE
    centre = rng.uniform(radius, SIZE * SCALE - radius, 2)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (outline(shape) @ rotation.T * radius + centre).round().astype(np.int32)
    colour = rng.integers(0, 256, 3)
    while np.abs(colour - image[int(centre[1]), int(centre[0])]).sum() < 120:  # visible
        colour = rng.integers(0, 256, 3)
    cv2.fillPoly(image, [points], tuple(int(c) for c in colour), lineType=cv2.LINE_AA)
    return cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def write(path: Path, image_rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")


def make(out: Path, labeled: int, unlabeled: int, test: int, seed: int
         ) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        for i in range(labeled):
            write(out / "labeled" / name / f"{name}-{i}.png", draw(name, rng))
        for i in range(test):
            write(out / "test" / name / f"{i:04d}.png", draw(name, rng))
    truth = []
    for i in range(unlabeled):
        name = CLASSES[rng.integers(len(CLASSES))]
        suffix = ".jpg" if i % 3 == 0 else ".png"
        rel = Path("unlabeled") / f"batch{i % 4}" / f"part{i % 7}" / f"img{i:05d}{suffix}"
        write(out / rel, draw(name, rng))
        truth.append((rel.as_posix(), name))
    with open(out.with_name(out.name + ".truth.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *truth])
    return truth


def all_labeled_copy(out: Path, truth: list[tuple[str, str]]) -> Path:
    """``<out>-all``: the same images with every training image labeled (hard links), for the
    all-labels baseline of a folder data set."""
    copy = out.with_name(out.name + "-all")
    for split in ("labeled", "test"):
        for src in (out / split).rglob("*.*"):
            dst = copy / src.relative_to(out)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.unlink(missing_ok=True)
            os.link(src, dst)
    for rel, name in truth:
        dst = copy / "labeled" / name / Path(rel).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        os.link(out / rel, dst)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--labeled", type=int, default=5, help="labeled images per class")
    parser.add_argument("--unlabeled", type=int, default=3000)
    parser.add_argument("--test", type=int, default=200, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-labeled-copy", action="store_true",
                        help="also write <out>-all, every training image labeled")
    args = parser.parse_args()
    truth = make(args.out, args.labeled, args.unlabeled, args.test, args.seed)
    print(f"wrote {args.out} ({len(CLASSES)} classes) and {args.out.name}.truth.csv")
    if args.all_labeled_copy:
        print(f"wrote {all_labeled_copy(args.out, truth)}")


if __name__ == "__main__":
    main()
