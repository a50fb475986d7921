"""`semigen export RUN --format imagefolder|hf|csv --out DIR`: the run's labeled images (the
user's own, corrected and added ones) and the unlabeled ones whose pseudo-label is at least
``--min-confidence`` sure, optionally with generated images, in a form other tools load:

- ``imagefolder``: ``DIR/<class>/<source>-<n>.<ext>``, torchvision's ``ImageFolder`` layout;
- ``hf``: a Hugging Face ``datasets`` dataset saved to disk (``load_from_disk(DIR)``) with an
  image, a ``ClassLabel`` label, the confidence and the source of each label;
- ``csv``: ``DIR/labels.csv`` (path,label,confidence,source; paths relative to DIR) beside the
  images under ``DIR/images/``; it is also a labels CSV semigen reads (``--labels``).

Every format carries ``source``: labeled (the user's label), added (labeled or corrected in
`semigen review`), pseudo (the classifier's, with its confidence) or generated. Images are the
original files where the run's data is a folder (copied as they are), PNGs of the arrays for
built-ins."""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import BUILTINS, ConfigError
from .data import DataError, added, class_folders, load_dataset
from .data.cells import restored, safe_row
from .data.images import png_bytes
from .generation.export import check_per_class, write_png
from .run import Layout, check_output, filling, read_pseudo_labels, replacing, run_config

log = logging.getLogger("semigen")
FORMATS = ("imagefolder", "hf", "csv")


@dataclass
class Item:
    label: int
    confidence: float
    source: str  # labeled | added | pseudo | generated
    original: str  # the image's id in the run's data (or the generated file's name)
    file: Path | None  # an image file to copy (None: encode `pixels`)
    pixels: np.ndarray | None


def export(run: Path, format: str, out: str | Path, min_confidence: float | None = None,
           generated_per_class: int = 0, overwrite: bool = False) -> dict:
    if format not in FORMATS:
        raise ConfigError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    cfg = run_config(run)  # with the run's added labels
    threshold = cfg.generate.min_confidence if min_confidence is None else min_confidence
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--min-confidence {threshold}: must lie between 0 and 1")
    check_per_class(generated_per_class, "--generated-per-class", low=0)
    out = check_output(out, run, overwrite, folder=True, data_source=cfg.data.source)
    data = load_dataset(cfg.data)
    data.report.raise_if_errors()
    # claimed before anything is written, filled in a folder of its own, renamed into place
    with tempfile.TemporaryDirectory() as scratch, filling(out, overwrite) as work:
        items = collect(run, cfg, data, threshold, generated_per_class, Path(scratch))
        WRITERS[format](items, data.classes, work)
    by_source = Counter(item.source for item in items)
    log.info(f"exported {len(items):,} images to {out} as {format}: "
             + ", ".join(f"{n:,} {s}" for s, n in by_source.items())
             + f" (pseudo-labels at {threshold:.2f} or above)")
    return {"out": str(out), "images": len(items), "by_source": dict(by_source),
            "min_confidence": threshold}


def collect(run: Path, cfg, data, threshold: float, generated_per_class: int,
            scratch: Path) -> list[Item]:
    root = None if cfg.data.source in BUILTINS else Path(cfg.data.source)
    added_ids = set(added.read(cfg.data.added_labels)) if cfg.data.added_labels else set()

    def original(image_id: str) -> Path | None:
        path = root / image_id if root is not None else None
        return path if path is not None and path.is_file() else None

    items = [Item(int(label), 1.0, "added" if image_id in added_ids else "labeled", image_id,
                  original(image_id), image)
             for image_id, image, label in zip(data.labeled.ids, data.labeled.images,
                                               data.labeled.labels, strict=True)]
    pseudo = Layout(run).pseudo_labels
    if not pseudo.is_file():
        raise DataError(f"{run} has no pseudo-labels yet ({pseudo}): `semigen label {run}` "
                        "writes them")
    where = {image_id: i for i, image_id in enumerate(data.unlabeled.ids)}
    # checked as every reader checks it: a hand-edited file is refused naming its line
    for image_id, (label, confidence) in read_pseudo_labels(pseudo, data.classes).items():
        i = where.get(image_id)
        if i is not None and confidence >= threshold:
            items.append(Item(label, confidence, "pseudo", image_id, original(image_id),
                              data.unlabeled.images[i]))
    if generated_per_class > 0:
        from .generation.export import sample_to_folder
        sample_to_folder(run, generated_per_class, scratch / "generated", overwrite=True)
        with open(scratch / "generated" / "manifest.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                path = restored(row["path"])
                items.append(Item(data.classes.index(restored(row["class"])), 1.0, "generated",
                                  path, scratch / "generated" / path, None))
    return items


def _write_image(item: Item, target_stem: Path) -> Path:
    """Copy the original file, or write the pixels as PNG; returns the file written."""
    if item.file is not None:
        target = target_stem.with_suffix(item.file.suffix.lower() or ".png")
        shutil.copyfile(item.file, target)
        return target
    target = target_stem.with_suffix(".png")
    write_png(target, item.pixels)
    return target


def _write_files(items: list[Item], classes: list[str], out: Path, stem, manifest: str) -> None:
    """Each item's image at ``out / stem(n, item)`` (+ its suffix) and a manifest of them."""
    rows = []
    for n, item in enumerate(items):
        target = out / stem(n, item)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = _write_image(item, target)
        rows.append(safe_row([written.relative_to(out).as_posix(), classes[item.label],
                              f"{item.confidence:.4f}", item.source, item.original]))
    with replacing(out / manifest) as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence", "source", "original"])
        writer.writerows(rows)


def write_imagefolder(items: list[Item], classes: list[str], out: Path) -> None:
    folders = class_folders(classes)  # file-system-safe and distinct
    _write_files(items, classes, out, lambda n, item: f"{folders[item.label]}/{item.source}-"
                 f"{n:06d}", "manifest.csv")


def write_csv(items: list[Item], classes: list[str], out: Path) -> None:
    _write_files(items, classes, out, lambda n, item: f"images/{item.source}/{n:06d}",
                 "labels.csv")


def write_hf(items: list[Item], classes: list[str], out: Path) -> None:
    try:
        import datasets
    except ImportError:
        raise ConfigError("--format hf needs the `datasets` package: pip install "
                          "'semigen[hf]' (or pip install datasets)") from None
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes)),
        "confidence": datasets.Value("float32"), "source": datasets.Value("string"),
        "original": datasets.Value("string")})

    def encoded(item: Item) -> dict:
        return {"bytes": item.file.read_bytes() if item.file is not None
                else png_bytes(item.pixels), "path": None}

    columns = {"image": [encoded(item) for item in items],
               "label": [item.label for item in items],
               "confidence": [item.confidence for item in items],
               "source": [item.source for item in items],
               "original": [item.original for item in items]}
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(out))


WRITERS = {"imagefolder": write_imagefolder, "hf": write_hf, "csv": write_csv}
