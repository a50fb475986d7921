"""Built-ins that torchvision reads: Fashion-MNIST, MNIST, CIFAR-10, SVHN.

Files live under ``data.cache_dir`` in torchvision's own layout, so a download (where a network
exists) and local files take the same path. Fashion-MNIST is first looked for in Debian's
``dataset-fashion-mnist`` folder (``data.fmnist_dir``), whose gzipped IDX files are extracted into
that layout once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from ..config import DataConfig
from .report import DataError

FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]


def stage_fmnist(local_dir: Path, cache: Path) -> None:
    """Extract Debian's (or any) gzipped IDX files into torchvision's FashionMNIST/raw/."""
    raw = cache / "FashionMNIST" / "raw"
    for name in FMNIST_FILES:
        if (raw / name).is_file():
            continue
        for candidate in (local_dir / name, local_dir / f"{name}.gz"):
            if candidate.is_file():
                raw.mkdir(parents=True, exist_ok=True)
                if candidate.suffix == ".gz":
                    extract_archive(str(candidate), str(raw))
                else:
                    (raw / name).write_bytes(candidate.read_bytes())
                break


def _open(name: str, cls, cache: Path, download: bool, **split):
    try:
        return cls(root=str(cache), download=download, **split)
    except (RuntimeError, OSError) as e:  # torchvision: "Dataset not found", URLError, ...
        hint = ("; with no network, install Debian's dataset-fashion-mnist or point "
                "--data.fmnist-dir at its IDX files" if name == "fmnist" else
                f"; with no network, put torchvision's files for it under {cache}")
        raise DataError(f"built-in '{name}': not found in {cache}"
                        + (" and the download failed" if download else " (download is off)")
                        + f" ({e}){hint}") from None


def _as_nhwc(data) -> np.ndarray:
    array = np.asarray(data, dtype=np.uint8)
    return array[..., None] if array.ndim == 3 else array


def load(name: str, cfg: DataConfig):
    cache = Path(cfg.cache_dir).expanduser()
    if name == "fmnist":
        stage_fmnist(Path(cfg.fmnist_dir).expanduser(), cache)
        train = _open(name, datasets.FashionMNIST, cache, cfg.download, train=True)
        test = _open(name, datasets.FashionMNIST, cache, cfg.download, train=False)
        return (_as_nhwc(train.data), train.targets.numpy().astype(np.int64),
                _as_nhwc(test.data), test.targets.numpy().astype(np.int64), FMNIST_CLASSES)
    if name == "mnist":
        train = _open(name, datasets.MNIST, cache, cfg.download, train=True)
        test = _open(name, datasets.MNIST, cache, cfg.download, train=False)
        return (_as_nhwc(train.data), train.targets.numpy().astype(np.int64),
                _as_nhwc(test.data), test.targets.numpy().astype(np.int64),
                [str(i) for i in range(10)])
    if name == "cifar10":
        train = _open(name, datasets.CIFAR10, cache, cfg.download, train=True)
        test = _open(name, datasets.CIFAR10, cache, cfg.download, train=False)
        return (_as_nhwc(train.data), np.asarray(train.targets, np.int64),
                _as_nhwc(test.data), np.asarray(test.targets, np.int64), list(train.classes))
    if name == "svhn":
        train = _open(name, datasets.SVHN, cache / "svhn", cfg.download, split="train")
        test = _open(name, datasets.SVHN, cache / "svhn", cfg.download, split="test")
        return (_as_nhwc(train.data.transpose(0, 2, 3, 1)), train.labels.astype(np.int64),
                _as_nhwc(test.data.transpose(0, 2, 3, 1)), test.labels.astype(np.int64),
                [str(i) for i in range(10)])
    raise DataError(f"unknown built-in '{name}'")
