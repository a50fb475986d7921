"""The run directory: ``config.yaml``, ``log.txt``, ``stats.jsonl``, TensorBoard events and JSON
records, written by rank 0 only (other ranks get a `RunDir` that writes nothing).

A run's records equal an uninterrupted run's after any crash and rerun: each stage rewinds its
stats (and its TensorBoard events, rebuilt from them) to the checkpoint it continues from,
temporary files a crash left behind are removed, and a torn last line is dropped.

One process writes a run at a time: a writing `RunDir` holds an exclusive lock on
``run.lock``, which names the holder (process, host, since when, command). The operating system
releases the lock when its process dies, so a lock left by a dead process is taken over (and
the log says so); a second live writer is refused at once, naming the holder."""

from __future__ import annotations

import json
import logging
import os
import shutil
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

from .config import BUILTINS, Config, ConfigError, differences, load_run_config, to_yaml

log = logging.getLogger("semigen")

# What a run directory may hold; anything else means --out points at a folder of the user's.
OWN_ENTRIES = {"config.yaml", "log.txt", "stats.jsonl", "split.json", "data_report.json",
               "metrics.json", "pseudo_labels.csv", "report.html", "checkpoints", "samples",
               "tensorboard", "baselines", "evaluator.json", "run.lock", "added_labels.csv",
               "earlier", "synthetic"}
# What labels added after the split make stale (set aside by `set_aside`); the checkpoints of
# every stage but these go too: the self-supervised features never saw a label.
STALE_WITH_NEW_LABELS = ("split.json", "metrics.json", "pseudo_labels.csv", "report.html",
                         "samples", "baselines", "synthetic")
KEPT_WITH_NEW_LABELS = ("represent",)
LOCK_FILE = "run.lock"


class RunInUse(ConfigError):
    """Another live process writes this run."""


_held: dict[Path, list[int]] = {}  # run directory -> [lock file descriptor, depth]
_taken_over: dict[Path, str] = {}  # run directory -> the dead holder, until the log says so


def lock_run(path: str | Path) -> None:
    """Become the one writer of the run in `path` (created if need be). Re-entrant within a
    process (a fit holds it across its stages, each of which takes it again). Refuses with
    `RunInUse` while another live process holds it; a holder that died is taken over (the
    next writing `RunDir` logs it)."""
    key = Path(path).resolve()
    if key in _held:
        _held[key][1] += 1
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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
    lock = Path(path) / LOCK_FILE
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


@contextmanager
def replacing(path: str | Path, mode: str = "w") -> Iterator:
    """Open `path` for writing through a temporary file beside it, renamed into place when the
    block ends: a reader, or a command after a crash, sees the old file or the new one, never
    half of one (text modes: UTF-8, csv-ready newlines)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
    try:
        with open(tmp, mode, **text) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RunDir:
    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self._tensorboard = {}  # stage -> SummaryWriter of tensorboard/<stage>/
        self._file_handler = None
        if writer:
            if self.path.exists() and not self.path.is_dir():
                raise ConfigError(f"--out {self.path}: is a file, not a run directory; choose "
                                  "another --out")
            lock_run(self.path)  # before touching a file: refuses a second writer
            for leftover in self.path.glob("*.tmp"):  # a crash mid-write; the real file stands
                leftover.unlink(missing_ok=True)
            self._file_handler = logging.FileHandler(self.path / "log.txt", encoding="utf-8")
            self._file_handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            log.addHandler(self._file_handler)
            if log.level == logging.NOTSET:  # log.txt gets info lines even when no CLI set levels
                log.setLevel(logging.INFO)
            left_by = _taken_over.pop(self.path.resolve(), None)
            if left_by:
                log.warning(f"{self.path}: took over the run from {left_by}, which ended "
                            "without finishing; it continues from its last checkpoint")

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def info(self, message: str) -> None:
        if self.writer:
            log.info(message)

    def write_config(self, cfg: Config) -> None:
        self.write_text("config.yaml", to_yaml(cfg))

    def write_text(self, name: str, text: str) -> None:
        if self.writer:
            with replacing(self.path / name) as f:
                f.write(text)

    def write_json(self, name: str, obj) -> None:
        self.write_text(name, json.dumps(obj, indent=1) + "\n")

    def update_metrics(self, stage: str, metrics: dict) -> None:
        """Set `stage`'s entry of metrics.json, keeping the other stages'."""
        if self.writer:
            self.write_json("metrics.json", read_metrics(self.path) | {stage: metrics})

    def stats(self, stage: str, step: int, **values) -> None:
        """One line of stats.jsonl; numbers also go to TensorBoard as ``stage/name``."""
        if not self.writer:
            return
        record = {"time": round(time.time(), 3), "stage": stage, "step": step, **values}
        with open(self.path / "stats.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._to_tensorboard(record)

    def _to_tensorboard(self, record: dict) -> None:
        stage, step = record["stage"], record["step"]
        if stage not in self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used
            self._tensorboard[stage] = SummaryWriter(str(self.path / "tensorboard" / stage))
        writer = self._tensorboard[stage]
        for name, value in record.items():
            if name in ("time", "stage", "step"):
                continue
            if _is_number(value):
                writer.add_scalar(f"{stage}/{name}", value, step, walltime=record["time"])
            elif isinstance(value, list) and value and all(map(_is_number, value)):
                for i, v in enumerate(value):  # e.g. per-class counts: a curve per class
                    writer.add_scalar(f"{stage}/{name}/{i}", v, step, walltime=record["time"])

    def note_continuation(self, changed: list[str]) -> None:
        """Log the config fields that changed since the run's config.yaml (`check_continuation`
        found them)."""
        if changed:
            self.info(f"continuing {self.path}; changed since its config.yaml: "
                      + "; ".join(changed))

    def rewind(self, stage: str, step: int) -> None:
        """Drop `stage`'s stats past `step` and its ``done`` line, written after the checkpoint
        a stage continues from (all of them when it starts afresh, step 0), so that a resumed
        run's stats.jsonl reads as if it had never stopped; its TensorBoard events are rebuilt
        from what is kept."""
        path = self.path / "stats.jsonl"
        if not self.writer:
            return
        kept = [r for r in (read_stats(path) if path.exists() else [])
                if r.get("stage") != stage
                or (r.get("step", 0) <= step and r.get("event") != "done")]
        if path.exists():  # rewritten whole: this also mends a torn last line
            self.write_text("stats.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        if stage in self._tensorboard:
            self._tensorboard.pop(stage).close()
        shutil.rmtree(self.path / "tensorboard" / stage, ignore_errors=True)
        for record in kept:
            if record.get("stage") == stage:
                self._to_tensorboard(record)

    def close(self) -> None:
        for writer in self._tensorboard.values():
            writer.close()
        self._tensorboard = {}
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
            unlock_run(self.path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Besides config.yaml, a run directory holds at least one of these; a data folder that
# happens to hold a config.yaml holds none of them.
RUN_MARKERS = ("split.json", "log.txt", "metrics.json", "checkpoints", "stats.jsonl")


def is_run_directory(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.yaml").is_file() and any((path / m).exists() for m in RUN_MARKERS)


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
    target, run = out.resolve(), Path(run_path).resolve()
    if target.is_relative_to(run) and (target == run
                                       or target.relative_to(run).parts[0] in OWN_ENTRIES):
        what = "the run directory" if target == run else "one of the run's own records"
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


def read_metrics(run_path: str | Path) -> dict:
    """metrics.json: an entry per finished stage ({} before the first)."""
    return read_run_json(run_path, "metrics.json") or {}


def read_stats(path: str | Path) -> list[dict]:
    """The records of stats.jsonl; a line that does not parse (a crash mid-write leaves its
    last line torn) is left out with a warning."""
    path = Path(path)
    stats_file = path / "stats.jsonl" if path.is_dir() else path
    records, torn = [], 0
    with open(stats_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    torn += 1
    if torn:
        log.warning(f"{stats_file}: left out {torn} unreadable line(s), torn by a crash")
    return records


def note_resume(run_dir: RunDir, stage: str, path, state: dict, cfg: Config) -> None:
    """Rewind the stage's stats to the checkpoint and log where the run resumed and which config
    fields changed since the checkpoint was written."""
    run_dir.rewind(stage, state["step"])
    changed = differences(state["config"], cfg.to_dict())
    run_dir.info(f"resumed from {path} at step {state['step']}"
             + ("; config changed: " + "; ".join(changed) if changed else ""))


# Fields that say what a run's data is. A command that continues a run must agree with its
# config.yaml on these, and on its model's fields (each stage names its own) once that stage has
# checkpoints; step budgets, logging, devices and evaluation may change.
DATA_FIELDS = ("source", "labels_csv", "labels_per_class", "split_seed", "image_size",
               "max_side", "channels")


def check_continuation(cfg: Config, model_fields: dict[str, tuple[str, ...]] | None = None
                       ) -> list[str]:
    """Before anything is written: refuse to continue the run in ``cfg.run.out`` with another
    data source, split, image shape or model (`model_fields`: section -> the fields that decide
    its model, checked once ``checkpoints/<section>/`` exists), naming what differs; refuse an
    --out that is a folder of other files. Returns every config field that changed
    (``field: old -> new``), for the log."""
    out = Path(cfg.run.out)
    if not out.exists():
        return []
    if not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a run directory; choose another --out")
    saved_file = out / "config.yaml"
    if not saved_file.is_file():
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in OWN_ENTRIES and not p.name.endswith(".tmp"))
        if foreign:
            raise ConfigError(f"--out {out}: holds other files ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}) and no semigen run; "
                              "choose a new or empty folder")
        return []
    saved = load_run_config(saved_file)
    conflicts = [f"data.{name}: {getattr(saved.data, name)!r} -> {getattr(cfg.data, name)!r}"
                 for name in DATA_FIELDS
                 if not _same_data_value(name, getattr(saved.data, name),
                                         getattr(cfg.data, name))]
    for section, names in (model_fields or {}).items():
        if (out / "checkpoints" / section).is_dir():
            conflicts += [f"{section}.{name}: {getattr(getattr(saved, section), name)!r} -> "
                          f"{getattr(getattr(cfg, section), name)!r}" for name in names
                          if getattr(getattr(saved, section), name)
                          != getattr(getattr(cfg, section), name)]
    if conflicts:
        raise ConfigError(
            f"{out} holds a run of other data or another model, which this command would "
            "break:\n  " + "\n  ".join(conflicts) + "\nStart a new run with another --out (or "
            f"delete {out}); only step budgets, logging, devices and evaluation may change "
            "when a run continues")
    ignored = {"run.out", "run.resume"}
    return [d for d in differences(saved.to_dict(), cfg.to_dict())
            if d.split(":")[0] not in ignored]


def _same_data_value(name: str, old, new) -> bool:
    if old == new or name not in ("source", "labels_csv") or old is None or new is None:
        return old == new
    if old in BUILTINS or new in BUILTINS:
        return False
    return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()


def set_aside(run_path: str | Path) -> Path:
    """Move what a change of labels makes stale into ``RUN/earlier/<n>/`` (n = 1, 2, ...: nothing
    is deleted, the earlier figures stay readable there) with a copy of stats.jsonl, so that the
    stages train again on the new labels; the self-supervised features' checkpoints stay."""
    run_path = Path(run_path)
    earlier = run_path / "earlier"
    n = 1 + max((int(p.name) for p in earlier.glob("*") if p.name.isdigit()), default=0)
    target = earlier / str(n)
    (target / "checkpoints").mkdir(parents=True)
    for name in STALE_WITH_NEW_LABELS:
        if (run_path / name).exists():
            os.replace(run_path / name, target / name)
    for stage in sorted((run_path / "checkpoints").glob("*")):
        if stage.name not in KEPT_WITH_NEW_LABELS:
            os.replace(stage, target / "checkpoints" / stage.name)
    if (run_path / "stats.jsonl").is_file():
        shutil.copy2(run_path / "stats.jsonl", target / "stats.jsonl")
    return target


def read_run_json(run_path: str | Path, name: str) -> dict | None:
    """A run's JSON record (split.json, metrics.json, ...), None when absent; a damaged one is
    refused with its name and what to do, never a traceback."""
    path = Path(run_path) / name
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        found = None
    if not isinstance(found, dict):
        raise ConfigError(f"{path}: damaged (not a JSON record semigen wrote); restore it from "
                          "a copy, or start a new run with another --out")
    return found


def check_split(run_path: str | Path, record: dict) -> str | None:
    """Refuse to continue a run whose data now gives another split than its split.json
    (classes, which images are labeled, their labels): the folder's files changed. A grown or
    shrunk unlabeled pool is allowed (per-image state is found by path); returns a sentence
    saying so for the log, else None."""
    saved = read_run_json(run_path, "split.json")
    if saved is None:
        return None
    if saved.get("added_labels") != record.get("added_labels"):
        raise ConfigError(
            f"{run_path}: labels were added since its classifier was trained "
            f"({Path(run_path) / 'added_labels.csv'}, or data.added_labels): run `semigen label "
            f"{run_path}` (or `semigen fit {run_path}`) first, which trains the classifier on "
            "them, then this command")
    problems = []
    if saved.get("classes") != record["classes"]:
        problems.append(f"classes: {', '.join(map(str, saved.get('classes') or []))} -> "
                        f"{', '.join(record['classes'])}")
    try:
        before = dict(zip(saved.get("labeled", []), saved.get("labeled_labels", []),
                          strict=True))
    except (TypeError, ValueError):
        raise ConfigError(f"{Path(run_path) / 'split.json'}: damaged (its labeled images and "
                          "labels do not pair up); restore it from a copy, or start a new run "
                          "with another --out") from None
    now = dict(zip(record["labeled"], record["labeled_labels"], strict=True))
    if before != now:
        added, removed = now.keys() - before.keys(), before.keys() - now.keys()
        relabeled = [k for k in now.keys() & before.keys() if now[k] != before[k]]
        problems.append(f"labeled images: {len(added)} added, {len(removed)} removed, "
                        f"{len(relabeled)} relabeled (e.g. "
                        f"{next(iter(sorted(added) or sorted(removed) or relabeled))})")
    if problems:
        raise ConfigError(
            f"{run_path} was trained on another split of this data (its split.json):\n  "
            + "\n  ".join(problems) + "\nStart a new run with another --out (or delete "
            f"{run_path}) to train on the data as it is now")
    count = saved.get("unlabeled_count", record["unlabeled_count"])
    if (count != record["unlabeled_count"] or saved.get(
            "unlabeled_fingerprint", record["unlabeled_fingerprint"]) != record[
            "unlabeled_fingerprint"]):
        return (f"the unlabeled images changed since this run read them ({count} then, "
                f"{record['unlabeled_count']} now): what the run keeps per image is matched by "
                "path, and images that are new to it are labeled afresh")
    return None
