"""How fast the data layer reads: an image folder it writes itself, and the built-ins.

    python benchmarks/data_io.py [--images 5000] [--size 32]

Prints one Markdown table row per measurement, for BENCHMARKS.md."""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from semigen.config import DataConfig
from semigen.data import load_dataset


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=32)
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


if __name__ == "__main__":
    main()
