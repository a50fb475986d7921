"""The stage skeleton: what every training loop of semigen shares, written once.

A stage (label, represent, calibrate, generate, a round's label-rN or generate-rN) is opened
in an open run (`semigen.run`) with `open_stage` (the runtime, its checkpointer and the
checkpoint to resume from), restores or
starts its objects with `resume_or_start`, and runs its steps with `run_steps`: progress,
a loss line every ``run.log_every`` steps, the stage's own periodic work, a checkpoint every
``run.checkpoint_every`` steps written by rank 0 alone, and the barrier after it. Each stage
supplies only its setup and a step function, so that its maths reads on one screen.

Labeling and generation both stand on this module; neither imports the other."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint, runtime
from .config import Config, ConfigError
from .progress import progress
from .run import Records, Run, check_run


@dataclass
class Stage:
    """One training stage of an open run: its name (``checkpoints/<name>/``, the ``stage`` of
    its stats lines), the run, its runtime, its checkpoints and where it resumes."""
    name: str
    run: Run
    rt: runtime.Runtime
    ckpts: checkpoint.Checkpointer
    resume_from: Path | None
    started: float = field(default_factory=time.perf_counter)

    @property
    def cfg(self) -> Config:
        return self.run.cfg

    @property
    def records(self) -> Records:
        return self.run.records

    @property
    def show_progress(self) -> bool:
        return self.rt.is_writer and self.cfg.run.progress

    def finished(self) -> None:
        """Record the stage as finished (a fit skips it when continued), with its wall time."""
        self.run.mark_finished(self.name, time.perf_counter() - self.started)

    def part(self, name: str, resume: str | None = None) -> Stage:
        """A stage inside this one (the representation stage inside label), in the same run
        directory with checkpoints of its own; it resumes by `resume` (default: the run's)."""
        ckpts = checkpoint.Checkpointer(self.run.layout.stage_folder(name),
                                        self.cfg.run.keep_last)
        return Stage(name, self.run, self.rt, ckpts,
                     ckpts.resume_path(resume or self.cfg.run.resume))


@contextmanager
def open_stage(run: Run, name: str) -> Iterator[Stage]:
    """Open stage `name` of the open `run`: its runtime (devices, DDP, the seed), its
    checkpoints, and the checkpoint to resume from (refused if it is not there)."""
    run.note_changes()
    rt = runtime.start(run.cfg.runtime)
    ckpts = checkpoint.Checkpointer(run.layout.stage_folder(name), run.cfg.run.keep_last)
    yield Stage(name, run, rt, ckpts, ckpts.resume_path(run.cfg.run.resume))


def resume_or_start(stage: Stage, objects: dict, init: Path | None = None,
                    init_objects: tuple[str, ...] | None = None,
                    check: Callable[[dict, Path], None] | None = None) -> tuple[int, dict | None]:
    """Load `objects` (networks, EMA, optimizers, by their checkpoint entries) from the
    checkpoint the stage resumes from, or, in a joint round, those named in `init_objects`
    (default: all) from the previous round's checkpoint `init`; `check` may refuse a checkpoint
    first. Returns the step to start at and the state loaded (None: a fresh start), whose other
    entries the stage reads itself."""
    state = None
    start_step = 0
    if stage.resume_from is not None:
        state = checkpoint.load(stage.resume_from)
        if stage.resume_from == stage.ckpts.latest:  # its own: a path given is the user's call
            check_run(state, stage.resume_from, stage.run.path)
        if check is not None:
            check(state, stage.resume_from)
        checkpoint.restore(state, objects)
        with checkpoint.reading(state, stage.name):
            start_step = int(state["step"])
        stage.records.note_resume(stage.name, stage.resume_from, state, stage.cfg)
    else:
        stage.records.rewind(stage.name, 0)  # lines of an attempt that died before a checkpoint
        if init is not None:
            state = checkpoint.load(init)
            if check is not None:
                check(state, init)
            checkpoint.restore(state, {k: v for k, v in objects.items()
                                       if init_objects is None or k in init_objects})
            stage.records.info(f"{stage.name}: starting from {init}")
    if stage.rt.is_writer:
        stage.ckpts.remove_leftovers()
    return start_step, state


def due(done: int, every: int, total: int) -> bool:
    """Whether periodic work falls on step `done`: every `every` steps, and at the last."""
    return done % every == 0 or done == total


# The setting to lower when a stage's training diverges, by stage (a round's label-rN trains
# at fit.label_lr; its generate-rN at generate.lr).
LEARNING_RATE_OF = {"represent": "label.pretrain_lr", "calibrate": "label.lr",
                    "label": "label.lr", "generate": "generate.lr"}


class TrainingDiverged(ConfigError):
    """A loss or a weight became inf or NaN: the stage stops, its last good checkpoint kept."""


def diverged(stage: Stage, done: int, what: str) -> TrainingDiverged:
    base = stage.name.split("-r")[0]
    setting = "fit.label_lr" if stage.name.startswith("label-r") else LEARNING_RATE_OF.get(
        base, f"{base}'s learning rate")
    section, _, name = setting.partition(".")
    now = getattr(getattr(stage.cfg, section), name, None) if name else None
    return TrainingDiverged(
        f"{stage.name}: training diverged at step {done} ({what}); its last good checkpoint is "
        f"kept. Lower {setting}{f' (now {now})' if now is not None else ''} and run the same "
        "command again")


class StopRequested(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a stage: it stopped after a whole step, with a checkpoint."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextmanager
def stop_between_steps() -> Iterator[list[str]]:
    """While a stage steps, Ctrl-C (SIGINT) and SIGTERM ask it to stop after the step in
    progress, so that its checkpoint holds whole steps; a second signal stops at once. Yields
    the list the signals' names are put in."""
    asked: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield asked  # signal handlers can only be set from the main thread
        return

    def ask(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield asked
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_steps(stage: Stage, start_step: int, total_steps: int,
              step: Callable[[int], dict], desc: str, *, log: bool = True,
              after_step: Callable[[int, bool], None] | None = None,
              checkpoint_state: Callable[[], dict] | None = None) -> None:
    """Steps `start_step` .. `total_steps` - 1 of `stage`. ``step(t)`` trains one step and
    returns the values to log (tensors are read only on the steps that log them); then, on
    every step, ``after_step(done, saving)`` does the stage's periodic work (grids,
    evaluations; `saving`: a checkpoint follows); then every ``run.checkpoint_every`` steps and
    at the end, rank 0 saves ``checkpoint_state()`` (called on every rank: it may gather) and
    every rank waits for it."""
    run = stage.cfg.run
    with stop_between_steps() as asked:
        for t in progress(range(start_step, total_steps), initial=start_step,
                          total=total_steps, desc=desc, unit="step",
                          disable=not stage.show_progress):
            values = step(t)
            done = t + 1
            if log and due(done, run.log_every, total_steps):
                logged = {k: v.item() if isinstance(v, torch.Tensor) else v
                          for k, v in values.items()}
                bad = [k for k, v in logged.items()
                       if isinstance(v, float) and not math.isfinite(v)]
                if bad:
                    raise diverged(stage, done, f"{bad[0]} is {logged[bad[0]]}")
                stage.records.stats(stage.name, done, **logged)
            stopping = bool(asked)  # a signal from here on stops after the next step
            saving = checkpoint_state is not None and (
                due(done, run.checkpoint_every, total_steps) or stopping)
            if after_step is not None:
                after_step(done, saving)
            if saving:
                state = checkpoint_state()
                bad = checkpoint.first_non_finite(state)
                if bad:  # never saved over the last good checkpoint
                    raise diverged(stage, done, f"{bad} holds inf or NaN")
                if stage.rt.is_writer:  # with the run's identity: known in any other run
                    stage.ckpts.save({**state, "run_id": stage.run.run_id}, done)
                stage.rt.fabric.barrier()
            if stopping:
                stage.records.info(f"{stage.name}: stopped by {asked[0]} after step {done} of "
                                   f"{total_steps}" + (", checkpoint saved" if saving else ""))
                raise StopRequested(asked[0])
