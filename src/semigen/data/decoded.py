"""Decode once: a folder's images, decoded and resized to the size a run uses, kept in a
compact cache that every later stage, round and run on the same files reads instead of
decoding again (on 2,624 scans of 300x300 px decoding took as long as a hundred training
steps, and every stage of a fit decoded them anew).

An entry is one uint8 array (N x H x W x C, read memory-mapped) and a JSON index with, per
file, its row or why it was skipped, the size it had and its channels. Its key is a hash of
every file's path and stat (size, modification and change time, inode) and of the settings
that decide the array (image size, longest side, channels), so a changed, added or removed
file, or another setting, is another entry. The newest `KEEP` entries are kept."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger("semigen")

VERSION = 1  # raise with any change to how images are decoded or resized
KEEP = 16  # entries kept under cache_dir/images/, the most recently used


def key(paths: list[Path], settings: dict) -> str | None:
    """The cache key of these files read with these settings; None where a file cannot be
    stat'ed (it is then reported as skipped by the decoding itself)."""
    digest = hashlib.sha256(json.dumps({"version": VERSION, **settings}, sort_keys=True).encode())
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            return None
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def read(cache_dir: str, entry_key: str | None) -> tuple[np.ndarray, dict] | None:
    """(images memory-mapped, index) of a complete entry, or None."""
    if entry_key is None:
        return None
    folder = Path(cache_dir).expanduser() / "images" / entry_key
    try:
        index = json.loads((folder / "index.json").read_text())
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if len(images) != index.get("count"):
        return None
    os.utime(folder)  # most recently used
    return images, index


def write(cache_dir: str, entry_key: str | None, images: np.ndarray, index: dict) -> None:
    """Store an entry (written to a temporary folder, then renamed: a reader sees a whole entry
    or none); a cache that cannot be written only costs the next stage a decoding."""
    if entry_key is None:
        return
    base = Path(cache_dir).expanduser() / "images"
    folder, partial = base / entry_key, base / f"{entry_key}.{os.getpid()}.tmp"
    try:
        partial.mkdir(parents=True, exist_ok=True)
        np.save(partial / "images.npy", np.ascontiguousarray(images))
        (partial / "index.json").write_text(json.dumps(index | {"count": len(images)}))
        if folder.exists():
            shutil.rmtree(partial)
        else:
            partial.rename(folder)
        prune(base)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        log.warning(f"could not keep the decoded images in {base} ({e.strerror or e}): later "
                    "stages decode them again")


def prune(base: Path, keep: int = KEEP) -> None:
    entries = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.endswith(".tmp")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
