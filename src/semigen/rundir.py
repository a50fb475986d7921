"""The run directory: ``config.yaml``, ``log.txt``, ``stats.jsonl``, TensorBoard events and JSON
records, written by rank 0 only (other ranks get a `RunDir` that writes nothing)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from .config import Config, to_yaml

log = logging.getLogger("semigen")


class RunDir:
    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self._tensorboard = None
        self._file_handler = None
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)
            self._file_handler = logging.FileHandler(self.path / "log.txt", encoding="utf-8")
            self._file_handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            log.addHandler(self._file_handler)
            if log.level == logging.NOTSET:  # log.txt gets info lines even when no CLI set levels
                log.setLevel(logging.INFO)

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
            path = self.path / name
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)

    def write_json(self, name: str, obj) -> None:
        self.write_text(name, json.dumps(obj, indent=1) + "\n")

    def update_metrics(self, stage: str, metrics: dict) -> None:
        """Set `stage`'s entry of metrics.json, keeping the other stages'."""
        path = self.path / "metrics.json"
        if self.writer:
            current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            self.write_json("metrics.json", current | {stage: metrics})

    def stats(self, stage: str, step: int, **values) -> None:
        """One line of stats.jsonl; numbers also go to TensorBoard as ``stage/name``."""
        if not self.writer:
            return
        record = {"time": round(time.time(), 3), "stage": stage, "step": step, **values}
        with open(self.path / "stats.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used
            self._tensorboard = SummaryWriter(str(self.path / "tensorboard"))
        for name, value in values.items():
            if _is_number(value):
                self._tensorboard.add_scalar(f"{stage}/{name}", value, step)
            elif isinstance(value, list) and value and all(map(_is_number, value)):
                for i, v in enumerate(value):  # e.g. per-class counts: a curve per class
                    self._tensorboard.add_scalar(f"{stage}/{name}/{i}", v, step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_stats(path: str | Path) -> list[dict]:
    path = Path(path)
    stats_file = path / "stats.jsonl" if path.is_dir() else path
    with open(stats_file, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def note_resume(run: RunDir, stage: str, path, state: dict, cfg: Config) -> None:
    """Rewind the stage's stats to the checkpoint and log where the run resumed and which config
    fields changed since the checkpoint was written."""
    from .config import differences
    rewind_stats(run, stage, state["step"])
    changed = differences(state["config"], cfg.to_dict())
    run.info(f"resumed from {path} at step {state['step']}"
             + ("; config changed: " + "; ".join(changed) if changed else ""))


def rewind_stats(run: RunDir, stage: str, step: int) -> None:
    """Drop `stage` lines past `step` (written after the checkpoint a run resumes from), so a
    resumed run's stats.jsonl reads as if it had never stopped."""
    path = run.path / "stats.jsonl"
    if not run.writer or not path.exists():
        return
    kept = [r for r in read_stats(path) if r.get("stage") != stage or r.get("step", 0) <= step]
    run.write_text("stats.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
