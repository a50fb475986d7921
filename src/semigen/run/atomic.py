"""Atomic writes: a reader, or a command after a crash, sees the old file or the new one,
never half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..files import exclusive_temporary


@contextmanager
def replacing(path: str | Path, mode: str = "w") -> Iterator:
    """Open `path` for writing through a temporary file beside it, renamed into place when the
    block ends (text modes: UTF-8, csv-ready newlines). The temporary file is created
    exclusively under a fresh name: a file or link planted where it would go is never
    written through."""
    path = Path(path)
    text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
    fd, temporary = exclusive_temporary(path)
    try:
        with open(fd, mode, **text) as f:
            yield f
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
