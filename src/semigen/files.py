"""Temporary files beside the file they will replace, created exclusively: a file or a link
planted where a temporary file would go (a run directory received from someone else) is never
written through."""

from __future__ import annotations

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
