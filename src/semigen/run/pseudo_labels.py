"""``RUN/pseudo_labels.csv``: ``path,label,confidence,round``, a row per unlabeled image, written
by the label stage (and each joint round), read by generation, evaluation, review and export."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import DataError
from ..data.cells import restored_row, safe_row
from .atomic import replacing

if TYPE_CHECKING:
    import torch

HEADER = ["path", "label", "confidence", "round"]


def write_pseudo_labels(path: Path, ids: list[str], classes: list[str], probs: torch.Tensor,
                        round_index: int = 0) -> None:
    confidence, labels = probs.reshape(len(ids), len(classes)).max(dim=1)  # none: 0 x C
    with replacing(path) as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for image_id, label, conf in zip(ids, labels.tolist(), confidence.tolist(), strict=True):
            writer.writerow(safe_row([image_id, classes[label], f"{conf:.4f}", round_index]))


def read_pseudo_labels(path: Path, classes: list[str]) -> dict[str, tuple[int, float]]:
    """``id -> (class index, confidence)`` from a pseudo_labels.csv; the latest round wins."""
    index = {c: i for i, c in enumerate(classes)}
    found: dict[str, tuple[int, float, int]] = {}
    damaged = (f"{path}: damaged; run `semigen label` on this run again to rewrite it (it "
               "resumes from its last checkpoint)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"path", "label", "confidence"} <= set(reader.fieldnames or ()):
                raise DataError(f"{damaged} (no path,label,confidence header)")
            for line, row in enumerate(reader, start=2):
                row = restored_row(row)
                if row["label"] not in index:
                    raise DataError(f"{path} line {line}: label '{row['label']}' is not a "
                                    f"class of this run ({', '.join(classes)})")
                try:
                    rnd, conf = int(row.get("round") or 0), float(row["confidence"])
                except (TypeError, ValueError):
                    raise DataError(f"{damaged} (line {line})") from None
                if not 0 <= conf <= 1:
                    raise DataError(f"{damaged} (line {line}: confidence {conf})")
                if row["path"] not in found or rnd >= found[row["path"]][2]:
                    found[row["path"]] = (index[row["label"]], conf, rnd)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{damaged} ({type(e).__name__})") from None
    return {k: (label, conf) for k, (label, conf, _) in found.items()}
