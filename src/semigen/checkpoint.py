"""Self-describing checkpoints: plain tensors and values, written atomically, loaded as data.

A checkpoint holds models, optimizers, EMA, step, RNG state, the resolved config and the package
versions, so a model can be rebuilt from it alone. It is loaded with ``weights_only=True``: a file
that carries pickled Python objects (which could run code) is refused."""

from __future__ import annotations

import contextlib
import os
import pickle
import platform
import re
import shutil
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from .files import exclusive_temporary

FORMAT = "semigen-checkpoint/1"
STEP_FILE = re.compile(r"step-(\d+)\.pt$")
LATEST = "latest.pt"  # a stage's last checkpoint, beside its step files

if TYPE_CHECKING:  # torch is imported when a checkpoint is read or written: the tools that
    import torch  # only look at a run (review on a cached run, report, export) start without it


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded; the message names the file."""


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("semigen", "torch", "torchvision", "lightning"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(payload: dict, path: Path) -> None:
    """Write through a temporary file and rename it into place: a reader, or a resume after a
    crash mid-write, sees the old file or the new one, never half of one."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = exclusive_temporary(path)
    try:
        with open(fd, "wb") as f:
            torch.save({"format": FORMAT, "versions": versions(), **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_data_only(path: str | Path, what: str = "checkpoint",
                   map_location: str | torch.device = "cpu"):
    """A torch file read as data only (``weights_only=True``): tensors and plain values. A file
    that holds pickled Python objects is refused (it could run code), and any file torch cannot
    read as data gives one sentence naming it, never torch's own advice to unpickle it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is not None:
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python objects ({found.group(1)}), which "
                f"could run code when loaded; a {what} must hold plain tensors and values"
            ) from None
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt "
                              "(unpickling failed)") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a foreign file
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt "
                              f"({type(e).__name__}{': ' + first if first else ''})") from None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    payload = load_data_only(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a semigen checkpoint (no '{FORMAT}' marker)")
    return payload | {"loaded_from": str(path)}


@contextlib.contextmanager
def reading(state: dict, what: str):
    """Rebuild something from a checkpoint's entries: a file that loads safely but lacks an
    entry or holds the wrong shapes or arguments is refused, naming the file, instead of
    failing deep inside torch."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        detail = f"no entry {e}" if isinstance(e, KeyError) else str(e).splitlines()[0][:300]
        raise CheckpointError(f"{state.get('loaded_from', 'checkpoint')}: not a usable {what} "
                              f"checkpoint ({type(e).__name__}: {detail}); was it written by "
                              "another program or another version of semigen?") from None


def stage_name(base: str, round_index: int) -> str:
    """``label``, ``label-r1``, ...: each joint round of a stage keeps its own checkpoints."""
    return base if round_index == 0 else f"{base}-r{round_index}"


def restore(state: dict, objects: dict) -> None:
    """``load_state_dict`` of each object from the checkpoint entry of the same name."""
    with reading(state, state.get("kind") or "training"):
        for name, obj in objects.items():
            obj.load_state_dict(state[name])


class Checkpointer:
    """``latest.pt`` beside the last `keep_last` ``step-XXXXXXXX.pt`` files, all in one folder.
    The step files are hard links to what latest.pt was, so they cost no extra write."""

    def __init__(self, folder: str | Path, keep_last: int = 3):
        self.folder = Path(folder)
        self.keep_last = keep_last

    @property
    def latest(self) -> Path:
        return self.folder / LATEST

    def save(self, payload: dict, step: int) -> Path:
        save({**payload, "step": step}, self.latest)
        if self.keep_last > 0:
            _link_or_copy(self.latest, self.folder / f"step-{step:08d}.pt")
            for old in self.step_files()[:-self.keep_last]:
                old.unlink(missing_ok=True)
        return self.latest

    def remove_leftovers(self) -> None:
        """Delete the temporary files of a write that a crash cut short: latest.pt, or the step
        file, from before it stands."""
        for leftover in self.folder.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    def step_files(self) -> list[Path]:
        found = [p for p in self.folder.glob("step-*.pt") if STEP_FILE.search(p.name)]
        return sorted(found, key=lambda p: int(STEP_FILE.search(p.name).group(1)))

    def resume_path(self, resume: str) -> Path | None:
        """What ``run.resume`` points at: auto (latest.pt if the run has one), none, or a path."""
        if resume == "none":
            if self.latest.exists():
                raise CheckpointError(
                    f"{self.folder.parent} already holds a run ({self.latest}): use --resume "
                    "auto to continue it, or choose another --out")
            return None
        if resume == "auto":
            return self.latest if self.latest.exists() else None
        return Path(resume)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def first_non_finite(state, where: str = "") -> str | None:
    """The first entry of a checkpoint state (nested dicts and lists of tensors) holding inf
    or NaN, as ``path.to.entry``; None when all are finite."""
    import torch
    if isinstance(state, torch.Tensor):
        return where if state.is_floating_point() and not torch.isfinite(state).all() else None
    items = state.items() if isinstance(state, dict) else (
        enumerate(state) if isinstance(state, (list, tuple)) else ())
    for key, value in items:
        found = first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None
