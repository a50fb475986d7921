"""Data sources: image folders, a labels CSV, and built-in data sets, all into one `Dataset`.

Folder layout: ``DATA/labeled/<class>/...``, ``DATA/unlabeled/...`` (any depth), optional
``DATA/test/<class>/...``. A ``path,label`` CSV adds images relative to DATA (rows with an empty
label are unlabeled). Built-ins take a seeded labeled split; the rest of their training set
becomes unlabeled, with its true labels kept aside for evaluation only."""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
import stat
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import BUILTINS, DataConfig
from ..progress import progress as progress_bar
from . import added, decoded
from .cells import restored
from .images import normalise, read_image, target_shape
from .report import DataError, DataReport

NO_FLIP = {"digits", "mnist", "svhn"}  # a mirrored digit is another glyph


@dataclass
class ImageSet:
    ids: list[str]  # relative paths, or "<builtin>/<split>/<index>"
    images: np.ndarray  # N x H x W x C, uint8
    labels: np.ndarray  # int64 class index; -1 where training may not know it

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    labeled: ImageSet
    unlabeled: ImageSet  # labels all -1: what training may see
    test: ImageSet | None
    unlabeled_truth: np.ndarray | None  # true labels of `unlabeled`, for evaluation only
    hflip: bool  # whether mirrored images stay in their class
    report: DataReport
    rotate: bool = False  # whether turned images stay in their class (self-supervised views)
    added_fingerprint: str | None = None  # the labels added after the split (`added`), if any
    added_count: int = 0  # the last images of `labeled` were unlabeled at the split (`added`)

    def held_out_allowed(self) -> np.ndarray:
        """Which labeled images may be held out to estimate accuracy or fit a temperature: the
        split's, a sample of the data; not those labeled after it, which the user chose (Label
        next offers the least sure ones) and which would make every estimate pessimistic. They
        train in every fold instead."""
        return np.arange(len(self.labeled)) < len(self.labeled) - self.added_count

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labeled.images.shape[1:])

    def split_record(self, cfg: DataConfig) -> dict:
        """What `split.json` holds: which images were labeled, and how the split was made."""
        record = {"source": self.name, "classes": self.classes,
                  "labeled": self.labeled.ids, "labeled_labels": self.labeled.labels.tolist(),
                  "unlabeled_count": len(self.unlabeled),
                  "unlabeled_fingerprint": fingerprint(self.unlabeled.ids)}
        if self.name in BUILTINS:
            record |= {"labels_per_class": cfg.labels_per_class, "split_seed": cfg.split_seed}
        if self.added_fingerprint:
            record["added_labels"] = self.added_fingerprint
        return record


def fingerprint(ids: list[str]) -> str:
    """A short hash of a list of image ids: equal lists, equal fingerprints."""
    return hashlib.sha256("\n".join(ids).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def load_dataset(cfg: DataConfig, progress: bool = False) -> Dataset:
    """Read a source, with the labels added after its split (``data.added_labels``); problems
    are in `dataset.report` (call `report.raise_if_errors()`)."""
    data = _load_source(cfg, progress)
    return added.apply(data, cfg.added_labels) if cfg.added_labels and data.report.ok else data


def _load_source(cfg: DataConfig, progress: bool) -> Dataset:
    # A folder given by a built-in's name was made a full path by `make_config`: a bare name
    # is the built-in, whatever folder the command runs beside.
    source = cfg.source
    if cfg.labels_csv is None and source in BUILTINS:
        return _load_builtin(cfg)
    if source in BUILTINS:
        raise DataError(f"--labels {cfg.labels_csv}: a labels CSV goes with an image folder, "
                        f"not the built-in data set '{source}'")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(f"{source}: no such folder (built-ins: {', '.join(BUILTINS)})")
    return _load_folder(root, cfg, progress)


# ---------------------------------------------------------------- folders and CSV


@dataclass
class _Entry:
    path: Path
    rel: str  # shown in reports and used as the image id
    label: str | None
    split: str  # "train" or "test"


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


# Names that say "image" on a folder (a folder so named is read as a folder).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm"}


def _not_read(path: Path) -> str | None:
    """Why an entry of a data folder is not read (None: a folder or a regular file, which is).
    Links count as what they point to."""
    if path.name.startswith("."):
        return "hidden (the name starts with a dot), not read"
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop, not read"
        if path.is_symlink():
            return "a symbolic link to nothing (dangling), not read"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return "not a regular file (a pipe, device or socket), not read"


def _files_under(folder: Path, skipped: list | None = None, root: Path | None = None,
                 _seen: set | None = None):
    """Every regular file below `folder` (links followed, each folder once), in name order;
    every entry found and not read goes to `skipped` as (path relative to `root`, reason)."""
    root = root or folder
    seen = _seen if _seen is not None else set()
    where = folder.stat()
    if (where.st_dev, where.st_ino) in seen:  # a linked folder already read: a cycle
        if skipped is not None:
            skipped.append((folder.relative_to(root).as_posix(),
                            "a link back to a folder already read, not read again"))
        return
    seen.add((where.st_dev, where.st_ino))
    for path in sorted(folder.iterdir()):
        why = _not_read(path)
        if why is not None:
            if skipped is not None:
                skipped.append((path.relative_to(root).as_posix(), why))
            continue
        if path.is_dir():
            inner = list(_files_under(path, skipped, root, seen))
            if not inner and path.suffix.lower() in IMAGE_SUFFIXES and skipped is not None:
                skipped.append((path.relative_to(root).as_posix(),
                                "a folder named like an image, with no file in it"))
            yield from inner
        else:
            yield path


def _class_folders(folder: Path, report: DataReport | None = None) -> list[Path]:
    """The class folders of `folder` (labeled/ or test/), by natural name order; hidden or
    unreadable entries are listed in `report`."""
    if not folder.is_dir():
        return []
    folders = []
    for p in folder.iterdir():
        why = _not_read(p)
        if why is not None:
            if report is not None:
                report.skipped.append((f"{folder.name}/{p.name}", why))
        elif p.is_dir():
            folders.append(p)
    return sorted(folders, key=lambda p: _natural_key(p.name))


def class_name(text: str) -> str:
    """A class name in one Unicode form (NFC): 'café' typed on Linux and read from a macOS
    folder (NFD) is one class."""
    return unicodedata.normalize("NFC", text)


def _scan_layout(root: Path, report: DataReport) -> tuple[list[_Entry], list[str]]:
    entries, classes = [], []
    folder_of: dict[str, str] = {}
    for class_dir in _class_folders(root / "labeled", report):
        name = class_name(class_dir.name)
        if name in folder_of:
            report.errors.append(
                f"labeled/{folder_of[name]} and labeled/{class_dir.name}: one class name "
                "written in two Unicode forms (they look alike); merge the two folders")
            continue
        folder_of[name] = class_dir.name
        classes.append(name)
        entries += [_Entry(p, p.relative_to(root).as_posix(), name, "train")
                    for p in _files_under(class_dir, report.skipped, root)]
    if (root / "labeled").is_dir():
        loose = [p for p in (root / "labeled").iterdir()
                 if _not_read(p) is None and not p.is_dir()]
        for p in loose:
            report.skipped.append((p.relative_to(root).as_posix(),
                                   "not inside a class folder (labeled/<class>/...)"))
    if (root / "unlabeled").is_dir():
        entries += [_Entry(p, p.relative_to(root).as_posix(), None, "train")
                    for p in _files_under(root / "unlabeled", report.skipped, root)]
    for class_dir in _class_folders(root / "test", report):
        name = class_name(class_dir.name)
        if name not in classes:
            report.errors.append(f"test/{class_dir.name}: class '{class_dir.name}' has no "
                                 "folder under labeled/, so the classifier cannot predict it")
            continue
        entries += [_Entry(p, p.relative_to(root).as_posix(), name, "test")
                    for p in _files_under(class_dir, report.skipped, root)]
    return entries, classes


def _read_csv(csv_path: Path, root: Path, folder_classes: list[str],
              report: DataReport, allow_outside: bool = False) -> list[_Entry]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = set(rows[0].keys()) if rows else set()
    except OSError as e:
        raise DataError(f"{csv_path}: cannot read the labels CSV ({e.strerror or e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: not a readable CSV ({e})") from None
    missing_columns = {"path", "label"} - columns
    if rows and missing_columns:
        raise DataError(f"{csv_path}: needs the columns path,label; missing "
                        f"{', '.join(sorted(missing_columns))} (found: {', '.join(columns)})")
    entries, unknown, outside, blank = [], {}, [], []
    inside = os.path.abspath(root)
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        rel = restored((row["path"] or "").strip())
        label = class_name(restored((row["label"] or "").strip())) or None
        if label is None and (row["label"] or ""):
            blank.append(line)  # only spaces: read as unlabeled, but said
        path = root / rel
        # '..' and absolute paths could make a run read any file; symlinks placed inside DATA
        # are its owner's choice, so the path is judged as written.
        if rel and not allow_outside and os.path.commonpath(
                [inside, os.path.abspath(path)]) != inside:
            outside.append(f"line {line}: {rel}")
            continue
        if not rel or not path.is_file():
            report.skipped.append((rel or f"{csv_path.name} line {line}",
                                   f"listed in {csv_path.name} line {line}, file missing"))
            continue
        if label is not None and folder_classes and label not in folder_classes:
            unknown.setdefault(label, []).append(line)
            continue
        entries.append(_Entry(path, path.relative_to(root).as_posix()
                              if path.is_relative_to(root) else rel, label, "train"))
    if outside:
        shown = "; ".join(outside[:10]) + ("; ..." if len(outside) > 10 else "")
        report.errors.append(f"{csv_path.name}: {len(outside)} path(s) outside the data folder "
                             f"{root} ({shown}); refused, since a labels CSV could otherwise "
                             "make a run read any file. Move the images under the data folder, "
                             "or pass --data.allow-outside-paths true")
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        report.warnings.append(f"{csv_path.name}: {len(blank)} row(s) whose label is only "
                               f"spaces (line {shown}) are read as unlabeled")
    for label, lines in unknown.items():
        shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
        where = f"line {shown}" if len(lines) == 1 else f"lines {shown}"
        report.errors.append(f"{csv_path.name}: label '{label}' ({where}) matches no "
                             f"class folder under labeled/ (classes: {', '.join(folder_classes)})")
    return entries


def read_files(paths: list[Path], keep_side: int, progress: bool = False):
    """`read_image` over many files on a thread pool (OpenCV decodes outside the GIL)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(progress_bar(pool.map(lambda p: read_image(p, keep_side), paths),
                                 total=len(paths), desc="reading images", unit="img",
                                 disable=not progress or len(paths) < 500))


def read_images(source: str | Path, shape: tuple[int, int, int], progress: bool = False
                ) -> tuple[ImageSet, list[tuple[str, str]]]:
    """Every image in a folder (any depth) or one file, normalised to `shape` (a trained
    model's input); returns the images, labels unknown, and the skipped files with reasons."""
    source = Path(source).expanduser()
    skipped = []
    if source.is_file():
        paths, root = [source], source.parent
    elif source.is_dir():
        paths, root = list(_files_under(source, skipped)), source
    else:
        raise DataError(f"{source}: no such file or folder")
    decoded_images = read_files(paths, max(shape[:2]), progress)
    ids, images = [], []
    for path, (image, why) in zip(paths, decoded_images, strict=True):
        rel = path.relative_to(root).as_posix()
        if image is None:
            skipped.append((rel, why))
        else:
            ids.append(rel)
            images.append(normalise(image, shape))
    array = np.stack(images) if images else np.zeros((0, *shape), np.uint8)
    return ImageSet(ids, array, np.full(len(ids), -1, np.int64)), skipped


MAX_FOLDER_BYTES = 200


def folder_name(label: str) -> str:
    """A class name as a folder name: path separators and other unsafe characters become '-'
    (Fashion-MNIST's 'T-shirt/top' -> 'T-shirt-top'); manifests keep the real name. Two classes
    can map to one name: `class_folders` makes them distinct."""
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "-", label).strip(" .")
    # a file name holds at most 255 bytes, and `sample` adds '-00000.png' to this one
    name = name.encode("utf-8")[:MAX_FOLDER_BYTES].decode("utf-8", "ignore").strip(" .")
    return name or "class"


def class_folders(classes: list[str]) -> list[str]:
    """One distinct folder name per class, in class order: `folder_name`, and where two classes
    would share it (``x/y``, ``x:y``, ``x-y``; or names that differ only in case, which are one
    folder on macOS and Windows) the later ones get ``~<class index>``."""
    taken, names = set(), []
    for i, name in enumerate(classes):
        folder = folder_name(name)
        if folder.casefold() in taken:
            folder = f"{folder}~{i}"
        while folder.casefold() in taken:  # a class really named like that suffix
            folder += "~"
        taken.add(folder.casefold())
        names.append(folder)
    return names


def read_class_folders(source: str | Path, classes: list[str], shape: tuple[int, int, int]
                       ) -> tuple[ImageSet, list[tuple[str, str]]]:
    """Labeled images from ``source/<class>/...`` (or ``source/test/<class>/...``) for classes
    a model knows; a folder named after no such class is an error naming it."""
    root = Path(source).expanduser()
    if (root / "test").is_dir() and ("test" not in classes or (root / "labeled").is_dir()):
        root = root / "test"  # DATA's layout; a class named 'test' is a class folder
    if not root.is_dir():
        raise DataError(f"{source}: no such folder (expected {source}/<class>/...)")
    folders = _class_folders(root)
    known = dict(zip(class_folders(classes), classes, strict=True))  # 'T-shirt-top' too
    known |= {c: c for c in classes if c not in known and folder_name(c) == c}
    known = {class_name(k): v for k, v in known.items()}
    unknown = [f.name for f in folders if class_name(f.name) not in known]
    if unknown:
        raise DataError(f"{root}: class folder(s) {', '.join(unknown)} match no class of this "
                        f"run ({', '.join(classes)})")
    sets, skipped = [], []
    for folder in folders:
        images, missed = read_images(folder, shape)
        images.labels[:] = classes.index(known[class_name(folder.name)])
        images.ids = [f"{folder.name}/{i}" for i in images.ids]
        sets.append(images)
        skipped += [(f"{folder.name}/{path}", why) for path, why in missed]
    if not sets:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/...)")
    return ImageSet(sum((s.ids for s in sets), []), np.concatenate([s.images for s in sets]),
                    np.concatenate([s.labels for s in sets])), skipped


def _merge_duplicates(entries: list[_Entry], report: DataReport) -> list[_Entry]:
    """One entry per file: a label beats no label; two different labels are an error."""
    by_path: dict[Path, _Entry] = {}
    for e in entries:
        key = e.path.resolve()
        old = by_path.get(key)
        if old is None or (old.label is None and e.label is not None):
            by_path[key] = e
        elif e.label is not None and old.label != e.label:
            report.errors.append(f"{e.rel}: labeled both '{old.label}' and '{e.label}'")
    return list(by_path.values())


def _folder_entries(root: Path, cfg: DataConfig, report: DataReport
                    ) -> tuple[list[_Entry], list[str]]:
    """The images of a folder (its layout, and the labels CSV), each once, and the classes."""
    entries, classes = _scan_layout(root, report)
    if cfg.labels_csv:
        entries += _read_csv(Path(cfg.labels_csv).expanduser(), root, classes, report,
                             cfg.allow_outside_paths)
        if not classes:
            classes = sorted({e.label for e in entries if e.label}, key=_natural_key)
            if len({name.casefold() for name in classes}) < len(classes):
                report.warnings.append("some labels differ only in upper and lower case ("
                                       + ", ".join(classes) + "): each is a class of its own")
    elif not (root / "labeled").is_dir():
        raise DataError(f"{root}: expected DATA/labeled/<class>/... and DATA/unlabeled/... "
                        "(optional DATA/test/<class>/...), or --labels labels.csv")
    report.classes = classes
    return _merge_duplicates(entries, report), classes


def _check_classes(classes: list[str], labeled_count: Counter, report: DataReport) -> None:
    """Every class needs a labeled image, and a classifier two classes."""
    for c in classes:
        if labeled_count[c] == 0:
            report.errors.append(f"class '{c}' has no labeled images (labeled/{c}/ is empty "
                                 "or all its files were skipped): give it at least one")
    if not classes:
        report.errors.append("no classes: put images in labeled/<class>/ or label rows in the CSV")
    elif len(classes) == 1:
        report.errors.append(f"only one class ('{classes[0]}'): a classifier needs at least two "
                             "to tell apart; add labeled/<another class>/ (or CSV labels)")


def _load_folder(root: Path, cfg: DataConfig, progress: bool) -> Dataset:
    report = DataReport(source=str(root))
    entries, classes = _folder_entries(root, cfg, report)

    images, index = decode_once(entries, cfg, progress)
    good = [(entry, row) for entry, row in zip(entries, index["rows"], strict=True)
            if row is not None]
    for entry, row, why in zip(entries, index["rows"], index["why"], strict=True):
        if row is None:
            report.skipped.append((entry.rel, why))
        else:
            report.sizes_found[why] += 1
    report.channels_found.update(index["channels"])
    if report.skipped:
        report.warnings.append(f"{len(report.skipped)} file(s) skipped (listed above); "
                               "the run uses the rest")

    labeled_count = Counter(e.label for e, _ in good if e.split == "train" and e.label)
    _check_classes(classes, labeled_count, report)
    if not good:
        report.errors.append("no readable images")
        return _empty_dataset(root.name, classes, report)

    shape = tuple(index["shape"])
    report.shape = shape
    report.resized = index["converted"]
    class_index = {c: i for i, c in enumerate(classes)}

    def image_set(keep) -> ImageSet:
        chosen = [(e, row) for e, row in good if keep(e)]
        array = images[[row for _, row in chosen]] if chosen else np.zeros((0, *shape), np.uint8)
        labels = np.array([class_index.get(e.label, -1) if e.label else -1 for e, _ in chosen],
                          dtype=np.int64)
        return ImageSet([e.rel for e, _ in chosen], np.ascontiguousarray(array), labels)

    labeled = image_set(lambda e: e.split == "train" and e.label is not None)
    unlabeled = image_set(lambda e: e.split == "train" and e.label is None)
    test = image_set(lambda e: e.split == "test")
    report.labeled_per_class = {c: labeled_count[c] for c in classes}
    report.test_per_class = ({c: int((test.labels == i).sum()) for i, c in enumerate(classes)}
                             if len(test) else {})
    report.unlabeled = len(unlabeled)
    if not len(unlabeled):
        report.warnings.append("no unlabeled images: semi-supervised training has nothing "
                               "to learn from beyond the labels")
    return Dataset(root.name, classes, labeled, unlabeled, test if len(test) else None, None,
                   cfg.hflip if cfg.hflip is not None else True, report, cfg.rotate)


def decode_once(entries: list[_Entry], cfg: DataConfig, progress: bool
                ) -> tuple[np.ndarray, dict]:
    """Every entry's image at the size the run uses (one array, row by row) and an index: per
    entry its row or None, and beside it the size found in the file ("HxW") or why it was
    skipped; the channels found, the shape used and how many images it converted. Read from
    the decoded-image cache where these very files were decoded with these settings before
    (`decoded`), else decoded now and kept there."""
    paths = [e.path for e in entries]
    settings = {"image_size": cfg.image_size, "max_side": cfg.max_side, "channels": cfg.channels}
    entry_key = decoded.key(paths, settings)
    cached = decoded.read(cfg.cache_dir, entry_key)
    if cached is not None:
        return cached
    found = read_files(paths, max(cfg.max_side, cfg.image_size or 0), progress)
    rows, why, channels, kept = [], [], Counter(), []
    for image, reason in found:
        rows.append(None if image is None else len(kept))
        why.append(reason)
        if image is not None:
            kept.append(image)
            channels["gray" if image.shape[2] == 1 else "rgb"] += 1
    shape = target_shape([img.shape for img in kept], cfg.image_size, cfg.channels,
                         cfg.max_side) if kept else (1, 1, 1)
    images = np.stack([normalise(img, shape) for img in kept]) if kept \
        else np.zeros((0, *shape), np.uint8)
    index = {"rows": rows, "why": why, "channels": dict(channels), "shape": list(shape),
             "converted": sum(img.shape != shape for img in kept)}
    if kept:
        decoded.write(cfg.cache_dir, entry_key, images, index)
    return images, index


def _empty_dataset(name, classes, report) -> Dataset:
    empty = ImageSet([], np.zeros((0, 1, 1, 1), np.uint8), np.zeros(0, np.int64))
    return Dataset(name, classes, empty, empty, None, None, True, report)


# ---------------------------------------------------------------- built-ins


def _load_builtin(cfg: DataConfig) -> Dataset:
    name = cfg.source
    train_x, train_y, test_x, test_y, classes = _builtin_arrays(name, cfg)
    report = DataReport(source=name, classes=classes, held_out_truth=True)

    labeled_idx = labeled_split(train_y, len(classes), cfg.labels_per_class, cfg.split_seed)
    short = [c for i, c in enumerate(classes) if (train_y == i).sum() < cfg.labels_per_class]
    if short:
        report.errors.append(f"data.labels_per_class={cfg.labels_per_class} is more than "
                             f"classes {', '.join(short)} hold")
    unlabeled_idx = np.setdiff1d(np.arange(len(train_y)), labeled_idx)

    def ids(split, idx):
        return [f"{name}/{split}/{i:05d}" for i in idx]

    labeled = ImageSet(ids("train", labeled_idx), train_x[labeled_idx], train_y[labeled_idx])
    unlabeled = ImageSet(ids("train", unlabeled_idx), train_x[unlabeled_idx],
                         np.full(len(unlabeled_idx), -1, np.int64))
    test = ImageSet(ids("test", np.arange(len(test_y))), test_x, test_y)
    if cfg.image_size is not None or cfg.channels != "auto":
        shape = target_shape([train_x.shape[1:]], cfg.image_size, cfg.channels, cfg.max_side)
        labeled, unlabeled, test = (
            ImageSet(s.ids, np.stack([normalise(im, shape) for im in s.images]), s.labels)
            for s in (labeled, unlabeled, test))
        report.resized = len(train_x) + len(test_x)
    h, w, c = train_x.shape[1:]
    report.sizes_found = Counter({f"{h}x{w}": len(train_x) + len(test_x)})
    report.channels_found = Counter({"gray" if c == 1 else "rgb": len(train_x) + len(test_x)})
    report.shape = tuple(labeled.images.shape[1:])
    report.labeled_per_class = {c: int((labeled.labels == i).sum())
                                for i, c in enumerate(classes)}
    report.test_per_class = {c: int((test_y == i).sum()) for i, c in enumerate(classes)}
    report.unlabeled = len(unlabeled)
    hflip = cfg.hflip if cfg.hflip is not None else name not in NO_FLIP
    return Dataset(name, classes, labeled, unlabeled, test, train_y[unlabeled_idx], hflip, report,
                   cfg.rotate)


def labeled_split(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` images of each class, drawn with `seed`; sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))


def _builtin_arrays(name: str, cfg: DataConfig):
    """(train_x, train_y, test_x, test_y, classes); images N x H x W x C uint8."""
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
        # A fixed held-out quarter, the same whatever the split seed, so runs compare.
        tr_x, te_x, tr_y, te_y = train_test_split(images, digits.target.astype(np.int64),
                                                  test_size=0.25, stratify=digits.target,
                                                  random_state=0)
        return tr_x, tr_y, te_x, te_y, [str(i) for i in range(10)]
    from . import torchvision_sets
    return torchvision_sets.load(name, cfg)
