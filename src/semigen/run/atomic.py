"""Atomic writes: a reader, or a command after a crash, sees the old file or the new one,
never half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path, mode: str = "w") -> Iterator:
    """Open `path` for writing through a temporary file beside it, renamed into place when the
    block ends (text modes: UTF-8, csv-ready newlines)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
    try:
        with open(tmp, mode, **text) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
