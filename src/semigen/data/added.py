"""Labels a user adds after a run's split: ``RUN/added_labels.csv`` (``path,label``, the data
contract's format, one row per image), written by `semigen review` and read by every command
that continues the run (``data.added_labels``).

An added label makes an unlabeled image labeled, or corrects the label of a labeled one. The
file is rewritten whole at each decision, atomically (a temporary file, flushed to disk, then
renamed over the old one): a browser or a server that dies leaves the previous decisions or the
new ones, never a torn file."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..files import exclusive_temporary
from .cells import restored, safe_row
from .report import DataError


def rows(path: str | Path) -> tuple[list[tuple[int, str, str]], list[str]]:
    """The file's rows as (line, image id, class name), stripped and `restored`, and its
    columns. A missing file is no rows; a file without the columns path,label is refused."""
    path = Path(path)
    if not path.is_file():
        return [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            if columns and not {"path", "label"} <= set(columns):
                raise DataError(f"{path}: needs the columns path,label (found: "
                                f"{', '.join(columns)})")
            found = [(line, restored((row.get("path") or "").strip()),
                      restored((row.get("label") or "").strip()))
                     for line, row in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    return found, columns


def read(path: str | Path) -> dict[str, str]:
    """{image id (the path as the data names it): class name}; a later row for the same image
    wins. A missing file is no labels; a file without the columns path,label, or a row
    without both, is refused."""
    found = {}
    for line, image, label in rows(path)[0]:
        if not image or not label:
            raise DataError(f"{path} line {line}: both path and label are needed (an added "
                            "label names one image and its class)")
        found[image] = label
    return found


def write(path: str | Path, labels: dict[str, str]) -> None:
    """Replace the file at `path` with `labels`, atomically and durably."""
    path = Path(path)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(safe_row(row) for row in labels.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = exclusive_temporary(path)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # the rename itself reaches the disk
        os.fsync(directory)
    finally:
        os.close(directory)


def fingerprint(labels: dict[str, str]) -> str:
    """Equal label sets, equal fingerprints (the order of the rows does not count)."""
    text = "\n".join(f"{k}\t{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def apply(data, path: str | Path):
    """`data` (a `Dataset`) with the labels of the CSV at `path` taken as true: unlabeled images
    move to the labeled set, labeled ones get the corrected class. Rows naming a class the data
    does not have are refused (file and line named); rows naming an image the training pool does
    not hold are left out and said in the report."""
    labels = read(path)
    if not labels:
        return data
    index = {name: i for i, name in enumerate(data.classes)}
    unknown = sorted({label for label in labels.values() if label not in index})
    if unknown:
        raise DataError(f"{path}: label(s) {', '.join(map(repr, unknown))} are no class of this "
                        f"data (classes: {', '.join(data.classes)})")
    where_labeled = {image: i for i, image in enumerate(data.labeled.ids)}
    where_unlabeled = {image: i for i, image in enumerate(data.unlabeled.ids)}
    relabel = {where_labeled[k]: index[v] for k, v in labels.items() if k in where_labeled}
    move = {where_unlabeled[k]: index[v] for k, v in labels.items() if k in where_unlabeled}
    missing = [k for k in labels if k not in where_labeled and k not in where_unlabeled]

    labeled_labels = data.labeled.labels.copy()
    for i, c in relabel.items():
        labeled_labels[i] = c
    moved = np.array(sorted(move), dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(data.unlabeled)), moved)
    labeled = replace(data.labeled,
                      ids=data.labeled.ids + [data.unlabeled.ids[i] for i in moved],
                      images=np.concatenate([data.labeled.images, data.unlabeled.images[moved]]),
                      labels=np.concatenate([labeled_labels,
                                             np.array([move[i] for i in moved], np.int64)]))
    unlabeled = replace(data.unlabeled, ids=[data.unlabeled.ids[i] for i in keep],
                        images=data.unlabeled.images[keep], labels=data.unlabeled.labels[keep])
    truth = None if data.unlabeled_truth is None else data.unlabeled_truth[keep]

    report = data.report
    corrected = sum(int(data.labeled.labels[i] != c) for i, c in relabel.items())
    report.added_labels = {"file": str(path), "added": len(move), "corrected": corrected,
                           "not_found": len(missing)}
    report.labeled_per_class = {c: int((labeled.labels == i).sum())
                                for i, c in enumerate(data.classes)}
    report.unlabeled = len(unlabeled)
    if missing:
        report.warnings.append(f"{path}: {len(missing)} added label(s) name images this data's "
                               f"training pool does not hold (e.g. {missing[0]}); left out")
    return replace(data, labeled=labeled, unlabeled=unlabeled, unlabeled_truth=truth,
                   added_fingerprint=fingerprint(labels), added_count=len(moved))
