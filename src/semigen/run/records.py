"""What a run records as it goes: ``log.txt``, ``stats.jsonl`` with its TensorBoard events,
``metrics.json`` (each stage's figures) and ``stages.json`` (which stages finished, and in how
many seconds), written by rank 0 only (other ranks get `Records` that write nothing).

A run's records equal an uninterrupted run's after any crash and rerun: each stage rewinds its
stats (and its TensorBoard events, rebuilt from them) to the checkpoint it continues from,
temporary files a crash left behind are removed, and a torn last line is dropped."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from pathlib import Path

from ..config import Config, ConfigError, differences, shortened, to_yaml
from .atomic import replacing
from .layout import Layout
from .lock import lock_run, taken_over, unlock_run

log = logging.getLogger("semigen")


class Records:
    """The records of the run in `path`; a writer (rank 0) holds the run's lock while open."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.layout = Layout(self.path)
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
            self._file_handler = logging.FileHandler(self.layout.log, encoding="utf-8")
            self._file_handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            log.addHandler(self._file_handler)
            if log.level == logging.NOTSET:  # log.txt gets info lines even when no CLI set levels
                log.setLevel(logging.INFO)
            if not self.layout.identity.exists():
                self.write_json(self.layout.identity, {"run_id": uuid.uuid4().hex,
                                                       "created": time.strftime("%Y-%m-%d")})
            left_by = taken_over(self.path)
            if left_by:
                log.warning(f"{self.path}: took over the run from {left_by}, which ended "
                            "without finishing; it continues from its last checkpoint")

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self, message: str) -> None:
        if self.writer:
            log.info(message)

    def write_config(self, cfg: Config) -> None:
        self.write_text(self.layout.config, to_yaml(cfg))

    def write_text(self, path: Path, text: str) -> None:
        if self.writer:
            with replacing(path) as f:
                f.write(text)

    def write_json(self, path: Path, obj) -> None:
        self.write_text(path, json.dumps(obj, indent=1) + "\n")

    def update_metrics(self, stage: str, metrics: dict) -> None:
        """Set `stage`'s entry of metrics.json, keeping the other stages'."""
        if self.writer:
            own = run_id(self.path)
            self.write_json(self.layout.metrics, ({"run_id": own} if own else {})
                            | read_metrics(self.path) | {stage: metrics})

    def mark_finished(self, stage: str, seconds: float) -> None:
        """Record `stage` as finished in stages.json, with its wall time (kept across resumes:
        the seconds of the attempt that finished it)."""
        if self.writer:
            self.write_json(self.layout.stages, read_stages(self.path)
                            | {stage: {"seconds": round(seconds, 1),
                                       "finished": time.strftime("%Y-%m-%d %H:%M:%S")}})

    def stats(self, stage: str, step: int, **values) -> None:
        """One line of stats.jsonl; numbers also go to TensorBoard as ``stage/name``."""
        if not self.writer:
            return
        record = {"time": round(time.time(), 3), "stage": stage, "step": step, **values}
        with open(self.layout.stats, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._to_tensorboard(record)

    def _to_tensorboard(self, record: dict) -> None:
        stage, step = record["stage"], record["step"]
        if stage not in self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used
            self._tensorboard[stage] = SummaryWriter(str(self.layout.tensorboard / stage))
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
        """Log the config fields that changed since the run's config.yaml."""
        if changed:
            self.info(f"continuing {self.path}; changed since its config.yaml: "
                      + "; ".join(changed))

    def note_resume(self, stage: str, path: Path, state: dict, cfg: Config) -> None:
        """Rewind the stage's stats to the checkpoint and log where the run resumed and which
        config fields changed since the checkpoint was written."""
        self.rewind(stage, state["step"])
        changed = differences(state["config"], cfg.to_dict())
        self.info(f"resumed from {path} at step {state['step']}"
                  + ("; config changed: " + "; ".join(changed) if changed else ""))

    def rewind(self, stage: str, step: int) -> None:
        """Drop `stage`'s stats past `step` and its ``done`` line, written after the checkpoint
        a stage continues from (all of them when it starts afresh, step 0), so that a resumed
        run's stats.jsonl reads as if it had never stopped; its TensorBoard events are rebuilt
        from what is kept."""
        path = self.layout.stats
        if not self.writer:
            return
        kept = [r for r in (read_stats(path) if path.exists() else [])
                if r.get("stage") != stage
                or (r.get("step", 0) <= step and r.get("event") != "done")]
        if path.exists():  # rewritten whole: this also mends a torn last line
            self.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        if stage in self._tensorboard:
            self._tensorboard.pop(stage).close()
        shutil.rmtree(self.layout.tensorboard / stage, ignore_errors=True)
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


def read_json(path: Path) -> dict | None:
    """A run's JSON record (split.json, metrics.json, ...), None when absent; a damaged one is
    refused with its name and what to do, never a traceback."""
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


def run_id(run_path: str | Path) -> str | None:
    """The run's identity (run.json), drawn when a writer first opened it (None for a run from
    before). The files a run writes (metrics.json, checkpoints) carry it, so that one copied
    in from another run is known as such."""
    found = (read_json(Layout(run_path).identity) or {}).get("run_id")
    return found if isinstance(found, str) else None


def read_metrics(run_path: str | Path) -> dict:
    """metrics.json: an entry per stage that recorded figures ({} before the first); refused
    where another run wrote it."""
    path = Layout(run_path).metrics
    found = read_json(path) or {}
    written_by, own = found.pop("run_id", None), run_id(run_path)
    if written_by is not None and own is not None and written_by != own:
        raise ConfigError(f"{path}: written by another run (run id "
                          f"{shortened(written_by, 40)}, this run's is {own!r}); remove it, and "
                          f"`semigen evaluate {run_path}` writes this run's figures again")
    wrong = not_a_number(found)
    if wrong:
        raise ConfigError(f"{path}: {wrong[0]} holds {shortened(wrong[1], 40)} where semigen "
                          f"writes a number (edited by hand?); remove it, and `semigen evaluate "
                          f"{run_path}` writes the run's figures again")
    return found


# The names of the figures metrics.json holds as numbers (or lists and tables of numbers).
NUMBER_NAMES = re.compile(r"accuracy|ece|estimate|confidence|temperature|fid|kid|precision|"
                          r"recall|consistency|ratio|steps|seconds|labeled|synthetic|shift|"
                          r"held_out|world_size|coverage|^n_")


def not_a_number(found, where: str = "") -> tuple[str, object] | None:
    """The first entry of a metrics record named as a number (`NUMBER_NAMES`) that holds text
    instead, as (``stage.name``, value); None when there is none."""
    for key, value in found.items() if isinstance(found, dict) else ():
        name = f"{where}.{key}" if where else str(key)
        if isinstance(value, str) and NUMBER_NAMES.search(str(key)):
            return name, value
        deeper = not_a_number(value, name)
        if deeper:
            return deeper
    return None


def read_stages(run_path: str | Path) -> dict:
    """stages.json: an entry per finished stage of a fit ({} before the first)."""
    return read_json(Layout(run_path).stages) or {}


def read_stats(path: str | Path) -> list[dict]:
    """The records of stats.jsonl (`path`: the run or the file); a line that does not parse (a
    crash mid-write leaves its last line torn) is left out with a warning."""
    path = Path(path)
    stats_file = Layout(path).stats if path.is_dir() else path
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
