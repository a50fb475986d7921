"""Atomic writes: a reader, or a command after a crash, sees the old file or the new one,
never half of one; and an output claimed by one command at a time, so that two never mix."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the rename alone then guards an output
    fcntl = None

from ..config import ConfigError
from ..files import exclusive_temporary


class OutputTaken(ConfigError):
    """Another command writes, or has just written, the same output."""


@contextmanager
def replacing(path: str | Path, mode: str = "w", new: bool = False) -> Iterator:
    """Open `path` for writing through a temporary file beside it, renamed into place when the
    block ends (text modes: UTF-8, csv-ready newlines). The temporary file is created
    exclusively under a fresh name: a file or link planted where it would go is never
    written through. `new`: `path` must not exist when the block ends (a file another command
    wrote there meanwhile is refused, never replaced)."""
    path = Path(path)
    text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
    fd, temporary = exclusive_temporary(path)
    try:
        with open(fd, mode, **text) as f:
            yield f
        if new:
            _claim_name(temporary, path)
        else:
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _claim_name(temporary: Path, path: Path) -> None:
    """`temporary` as `path`, where nothing stands at `path` (a hard link is made only where the
    name is free: two commands racing for it cannot both have it)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise OutputTaken(f"--out {path}: written meanwhile by another command; nothing of "
                          "this one was put there (choose another --out)") from None
    except OSError:  # a file system without hard links: the check before the write stands
        os.replace(temporary, path)


@contextmanager
def filling(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A new folder to write the output folder `out` in; when the block ends it is renamed to
    `out` (a new or empty folder) or, with `overwrite`, its files moved into `out` (same names
    replaced). While the block runs `out` is claimed: a second command writing it is refused at
    once, and a reader never sees half of the output. A block that fails leaves `out` as it
    was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _claimed(out):
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
        try:
            yield work
            try:
                os.rename(work, out)  # an empty folder is replaced, one that holds files is not
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not overwrite:
                    raise OutputTaken(
                        f"--out {out}: files appeared there meanwhile (another command?); "
                        "nothing of this one was put there (choose another --out, or give "
                        "--overwrite)") from None
                _move_into(work, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _claimed(out: Path) -> Iterator[None]:
    """Hold the lock ``.OUT.lock`` beside `out` (released by the system if the process dies),
    refusing at once while another process holds it."""
    lock = out.parent / f".{out.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    held = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputTaken(f"--out {out}: another command is writing there now; wait "
                                  "for it, or choose another --out") from None
        held = True
        yield
    finally:
        if held:
            lock.unlink(missing_ok=True)  # while still held: nobody locks a name that goes
        os.close(fd)


def _move_into(source: Path, target: Path) -> None:
    """Every file under `source` moved to the same place under `target`, replacing a file of
    the same name."""
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if destination.is_dir() and not destination.is_symlink():
                _move_into(entry, destination)
                continue
            if destination.exists() or destination.is_symlink():
                destination.unlink()
        os.replace(entry, destination)
