"""The checkpoints of a run's stages, by stage name: the last round's, refused unless they hold
what the command needs."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError, first_non_finite, load, reading
from .layout import Layout
from .records import read_json, run_id


def stage_checkpoint(run_path: str | Path, stage: str, which: str, kind: str) -> Path:
    """Where a stage's ``latest`` checkpoint is (its last joint round's, if any), or the path
    `which`; refused where the run has none yet. Reads nothing (no torch)."""
    if which == "best":
        raise CheckpointError("--checkpoint best is gone: it was chosen by test accuracy, and "
                              "semigen chooses nothing on the test set; use latest (the "
                              "weights the pseudo-labels came from) or a checkpoint file")
    path = Layout(run_path).final_checkpoint(stage) if which == "latest" else Path(which)
    if which == "latest" and not path.is_file():
        raise CheckpointError(f"{run_path} has no {kind} yet ({path} is missing): train it with "
                              f"`semigen {stage} {run_path}` first")
    return path


def load_stage(run_path: str | Path, stage: str, which: str, kind: str) -> tuple[Path, dict]:
    """A stage's ``latest`` checkpoint under ``RUN/checkpoints/<stage>/`` (its last joint
    round's, if any), or a path; refused unless it holds a `kind` (classifier, generator)."""
    path = stage_checkpoint(run_path, stage, which, kind)
    state = load(path)
    if state.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {state.get('kind')}, not a {kind}")
    with reading(state, kind):
        classes, shape = state["classes"], state["image_shape"]
        if not (isinstance(classes, list) and len(classes) == state["net"]["num_classes"]
                and len(shape) == 3):
            raise ValueError(f"{len(classes)} class names for {state['net']['num_classes']} "
                             f"outputs, image shape {shape}")
    check_run(state, path, run_path)
    bad = first_non_finite({k: state.get(k) for k in ("model", "generator", "ema")})
    if bad:
        raise CheckpointError(f"{path}: {bad} holds inf or NaN; not weights to {kind} with "
                              "(train the stage again, or give another checkpoint)")
    return path, state


def check_run(state: dict, path: Path, run_path: str | Path) -> None:
    """Refuse a checkpoint another run wrote (its run id, or, for a run from before ids, classes
    other than the run's split.json names): its weights would be read as this run's."""
    written_by, own = state.get("run_id"), run_id(run_path)
    split = read_json(Layout(run_path).split) or {}
    other = (written_by is not None and own is not None and written_by != own) or (
        isinstance(state.get("classes"), (list, tuple)) and isinstance(split.get("classes"), list)
        and list(state["classes"]) != split["classes"])
    if other:
        raise CheckpointError(f"{path}: written by another run (not {run_path}, whose classes "
                              f"and identity it does not share); give a checkpoint of this run")
