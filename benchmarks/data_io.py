"""How fast the data layer reads (an image folder it writes itself, and the built-ins) and makes
the classifier's augmented training batches.

    python benchmarks/data_io.py [--images 5000] [--size 32] [--batches 100]

Prints Markdown tables for BENCHMARKS.md."""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from lightning.fabric import Fabric

from semigen.config import DataConfig
from semigen.data import endless_batches, load_dataset, strong, weak


def write_folder(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % 10
        sub = root / ("labeled" / Path(str(label)) if i < 100 else Path("unlabeled"))
        sub.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(str(sub / f"{i:06d}.{'png' if i % 2 else 'jpg'}"), image)


def timed(cfg: DataConfig) -> tuple[float, int]:
    start = time.perf_counter()
    data = load_dataset(cfg)
    data.report.raise_if_errors()
    n = len(data.labeled) + len(data.unlabeled) + (len(data.test) if data.test else 0)
    return time.perf_counter() - start, n


def batch_seconds(batches: int, size: int = 28, batch_size: int = 32, uratio: int = 3
                  ) -> tuple[float, int]:
    """Seconds to make one label-stage batch in the main process, and the batch's number of
    views: `batch_size` weak views of labeled images and `uratio` times as many weak + strong
    pairs of unlabeled ones."""
    fabric = Fabric(accelerator="cpu", devices=1)
    shape = (size, size, 1)
    images = np.random.default_rng(0).integers(0, 256, (1000, *shape), dtype=np.uint8)
    labels = np.zeros(len(images), dtype=np.int64)
    labeled = endless_batches(fabric, images, labels, [weak(shape, True)], batch_size, 0, 0)
    unlabeled = endless_batches(fabric, images, labels, [weak(shape, True), strong(shape, True)],
                                uratio * batch_size, 1, 0)
    next(labeled), next(unlabeled)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        next(labeled), next(unlabeled)
    return (time.perf_counter() - start) / batches, batch_size * (1 + 2 * uratio)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print("| source | images | seconds | images/s |")
    print("| --- | ---: | ---: | ---: |")
    work = Path(tempfile.mkdtemp())
    try:
        write_folder(work / "data", args.images, args.size)
        seconds, n = timed(DataConfig(source=str(work / "data")))
        label = f"folder, {args.size}x{args.size} png+jpg"
        print(f"| {label} | {n} | {seconds:.2f} | {n / seconds:.0f} |")
        cache = work / "cache"
        for label, name in (("digits", "digits"), ("fmnist, first (extracts IDX)", "fmnist"),
                            ("fmnist, cached", "fmnist")):
            if name == "fmnist" and not Path(DataConfig().fmnist_dir).is_dir():
                print(f"| {label} | - | skipped: dataset-fashion-mnist not installed | - |")
                continue
            seconds, n = timed(DataConfig(source=name, cache_dir=str(cache), download=False))
            print(f"| {label} | {n} | {seconds:.2f} | {n / seconds:.0f} |")
    finally:
        shutil.rmtree(work)
    seconds, views = batch_seconds(args.batches)
    print(f"\n| label-stage batch, 28x28 gray: {views} augmented views | ms per batch | views/s |")
    print("| --- | ---: | ---: |")
    print(f"| {args.batches} batches, main process | {seconds * 1000:.0f} "
          f"| {views / seconds:.0f} |")


if __name__ == "__main__":
    main()
