"""Writing a real collection as semigen's folder contract, for the benchmarks' own data sets
(`make_elpv.py`, `make_icons.py`): per class, `labeled` images in ``labeled/<class>/``,
`test` in ``test/<class>/`` and the rest in ``unlabeled/`` at their true shares; beside the
folder ``<out>.truth.csv``, the unlabeled images' classes, which training never reads."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np


def balanced(members: dict[str, list[Path]], seed: int) -> dict[str, list[Path]]:
    """Every class cut to as many files as the smallest has (a random subset of each): the
    collection made balanced, so that the unlabeled pool's classes are equally common."""
    rng = np.random.default_rng(seed + 2000)
    fewest = min(len(files) for files in members.values())
    return {name: [files[i] for i in sorted(rng.choice(len(files), fewest, replace=False))]
            for name, files in members.items()}


def write_folder_set(out: Path, members: dict[str, list[Path]], labeled: int, test: int,
                     seed: int) -> list[tuple[str, str]]:
    """Hard-link (or copy) each class's files into the folder contract; returns the truth
    rows (path under `out`, class) of the unlabeled images."""
    rng = np.random.default_rng(seed)
    truth = []
    for name in sorted(members):
        files = members[name]
        for rank, i in enumerate(rng.permutation(len(files))):
            split = ("labeled" if rank < labeled else "test" if rank < labeled + test
                     else "unlabeled")
            rel = Path(split) / (name if split != "unlabeled" else "") / \
                f"{name}-{files[i].name}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).unlink(missing_ok=True)
            try:
                os.link(files[i], out / rel)
            except OSError:  # another file system
                (out / rel).write_bytes(files[i].read_bytes())
            if split == "unlabeled":
                truth.append((rel.as_posix(), name))
    with open(out.with_name(out.name + ".truth.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *truth])
    return truth
