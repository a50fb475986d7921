"""What a command may write to, and what counts as a run directory."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .layout import Layout


def is_run_directory(path: str | Path) -> bool:
    return Layout(path).is_run()


def as_run_path(run: str | Path) -> Path:
    """`run` as a Path, if it is a run directory (its resolved config.yaml and the records of a
    run); else a clear refusal."""
    if not is_run_directory(run):
        raise ConfigError(f"{run}: not a run directory (no config.yaml and records of a "
                          "semigen run)")
    return Path(run)


def check_output(out: str | Path, run_path: str | Path, overwrite: bool, folder: bool = False,
                 data_source: str | None = None) -> Path:
    """Refuse an output that would destroy something: one of the run's own records (always),
    a place inside the run's data folder (always: it would be read as training data), an
    existing file or, for `folder`, a folder that holds files, unless `overwrite`. Returns
    `out` as a Path."""
    out = Path(out).expanduser()
    target = out.resolve()
    if Layout(run_path).own_entry(target):
        what = ("the run directory" if target == Path(run_path).resolve()
                else "one of the run's own records")
        raise ConfigError(f"--out {out}: is {what} ({run_path}); choose an --out outside them")
    if data_source and Path(data_source).expanduser().is_dir() and target.is_relative_to(
            Path(data_source).expanduser().resolve()):
        raise ConfigError(f"--out {out}: lies inside the run's data folder {data_source}, whose "
                          "images it would add to or replace; choose an --out outside it")
    if overwrite:
        return out
    if folder and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: a folder that already holds files; choose a new or "
                          "empty folder (or give --overwrite to replace what has the same names)")
    if not folder and out.exists():
        raise ConfigError(f"--out {out}: already exists; choose another name (or give "
                          "--overwrite to replace it)")
    return out
