"""The writer's lock: one process writes a run at a time.

A writer holds an exclusive lock on ``RUN/run.lock``, which names the holder (process, host,
since when, command). The operating system releases the lock when its process dies, so a lock
left by a dead process is taken over (and the log says so); a second live writer is refused at
once, naming the holder."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not guarded
    fcntl = None

from ..config import ConfigError
from .layout import Layout


class RunInUse(ConfigError):
    """Another live process writes this run."""


_held: dict[Path, list[int]] = {}  # run directory -> [lock file descriptor, depth]
_taken_over: dict[Path, str] = {}  # run directory -> the dead holder, until the log says so


def lock_run(path: str | Path) -> None:
    """Become the one writer of the run in `path` (created if need be). Re-entrant within a
    process (a fit holds it across its stages, each of which takes it again). Refuses with
    `RunInUse` while another live process holds it; a holder that died is taken over
    (`taken_over` tells whom, once)."""
    key = Path(path).resolve()
    if key in _held:
        _held[key][1] += 1
        return
    key.mkdir(parents=True, exist_ok=True)
    # never through a link: run.lock planted as a link would have its target truncated
    fd = os.open(Layout(key).lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise RunInUse(
                f"{path} is being written by {holder}. Wait for it to finish (or stop it), or "
                "choose another --out; report, sample, predict and evaluate (which then "
                "prints without storing) can read the run meanwhile") from None
    left = os.pread(fd, 4096, 0)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "command": " ".join(["semigen", *sys.argv[1:]])}).encode(), 0)
    _held[key] = [fd, 1]
    if left.strip():
        _taken_over[key] = _describe_holder(left)


def taken_over(path: str | Path) -> str | None:
    """The dead holder this process took the run over from, the first time it is asked."""
    return _taken_over.pop(Path(path).resolve(), None)


@contextmanager
def writing(path: str | Path, writer: bool = True) -> Iterator[None]:
    """Hold the run in `path` for a sequence of stages (a fit); `writer` False: a DDP rank
    other than 0, which writes nothing."""
    if writer:
        lock_run(path)
    try:
        yield
    finally:
        if writer:
            unlock_run(path)


def unlock_run(path: str | Path) -> None:
    """Leave the run (the outermost holder in this process empties run.lock and unlocks)."""
    key = Path(path).resolve()
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] == 0:
        fd = _held.pop(key)[0]
        os.ftruncate(fd, 0)  # an empty run.lock: nobody was writing when the holder left
        os.close(fd)  # closing releases the lock


def writer_of(path: str | Path) -> str | None:
    """Who writes the run in `path` now, if another live process does (else None)."""
    lock = Layout(path).lock
    if fcntl is None or not lock.is_file() or Path(path).resolve() in _held:
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _describe_holder(os.pread(fd, 4096, 0))
    finally:
        os.close(fd)


def _describe_holder(raw: bytes) -> str:
    try:
        who = json.loads(raw)
        return (f"process {who['pid']} on {who['host']} since {who['since']} "
                f"({who['command']})")
    except (ValueError, TypeError, KeyError):
        return "another process"
