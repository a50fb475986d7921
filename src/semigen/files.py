"""Files, whatever they hold: temporary files beside the file they will replace, created
exclusively (a file or a link planted where a temporary file would go, in a run directory
received from someone else, is never written through); a file's SHA-256."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


def exclusive_temporary(path: str | Path) -> tuple[int, Path]:
    """A new, empty file beside `path` under a fresh name (``.NAME.<random>.tmp``), opened for
    writing (its descriptor) with the usual permissions; never an existing file or link."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(temporary, flags, 0o666), temporary


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
