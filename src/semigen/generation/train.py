"""The generator's training stage, the same for every backend: open the stage, read the mode's
training set, build the backend's networks, resume or start, then run the backend's step on
class-balanced batches, with per-class grids in ``RUN/samples/`` and checkpoints.

A joint round (``round_index`` >= 1) refines the previous round's networks (``init``) on the
re-estimated pseudo-labels for ``fit.generate_steps`` steps, as its own stage ``generate-r<N>``.
Everything random in a step comes from (seed, rank, step): a resumed run takes the very steps
of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint, runtime
from ..run import Run
from ..stage import due, open_stage, resume_or_start, run_steps
from ..training import payload
from .backends import BACKENDS
from .data import finish_training, image_batches, open_training_set
from .sampling import save_grid
from .variety import real_spreads, spread_ratios

STAGE = "generate"


def model_fields(backend: str) -> dict:
    """The config fields that say which generator a run trains (for `check_continuation`)."""
    return {"generate": ("backend", "mode", *BACKENDS[backend].MODEL_FIELDS)}


def check_backend(state: dict, backend: str, path: Path) -> None:
    """Refuse to continue (resume, or refine in a joint round) another backend's generator."""
    found = backend_of(state)
    if found != backend:
        raise checkpoint.CheckpointError(
            f"{path}: holds a {found} generator, and this run's generate.backend is {backend}: "
            f"use --generate.backend {found}, or another --out for a new generator")


def backend_of(state: dict) -> str:
    """A generator checkpoint's backend (those written before there were two are GANs)."""
    return state.get("backend", "gan")


def train_generator(run: Run, round_index: int = 0, init: Path | None = None) -> dict:
    """Train ``generate.backend`` in ``generate.mode`` into the open `run`; a joint round
    continues from the generator checkpoint `init`."""
    cfg, data = run.cfg, run.data
    gen = cfg.generate
    backend = BACKENDS[gen.backend]
    name = checkpoint.stage_name(STAGE, round_index)
    total_steps = gen.steps if round_index == 0 else cfg.fit.generate_steps
    with open_stage(run, name) as stage:
        rt = stage.rt
        images, labels, weights = open_training_set(stage, round_index)
        num_classes = len(data.classes)
        model = backend.build(gen, num_classes, data.shape)
        start_step, _ = resume_or_start(
            stage, model.objects, init,
            check=lambda state, path: check_backend(state, gen.backend, path))
        step_once = backend.trainer(model, gen, rt.fabric)
        ema = model.objects["ema"]
        ema.to(rt.device)
        streams = 4 * round_index  # each round draws batches and noise of its own
        batches = image_batches(images, labels, weights, gen.batch_size,
                                rt.data_seed(streams + 2), start_step, rt.device)
        noise_seed = rt.data_seed(streams + 3)
        real = real_spreads(images, labels, num_classes)

        def step(t: int) -> dict:
            x, y = next(batches)
            # All of this step's noise comes from (seed, rank, step): resumable exactly.
            g = torch.Generator(rt.device).manual_seed(runtime.mix_seed(noise_seed, t))
            return step_once(x, y, g)

        def after_step(done: int, saving: bool) -> None:
            if saving or due(done, gen.sample_every, total_steps):
                backend.sync(model, rt.fabric)
                if rt.is_writer:
                    grid = save_grid(ema.module, num_classes, gen.grid_per_class,
                                     run.layout.sample_grid(name, done))
                    log_variety(stage, done, spread_ratios(*grid, real), data.classes)

        def checkpoint_state() -> dict:
            return payload("generator", name, gen.mode, model.net_args, data.classes,
                           data.shape, cfg.to_dict(), backend=gen.backend, **model.state())

        run_steps(stage, start_step, total_steps, step, f"{name} ({gen.backend}, {gen.mode})",
                  after_step=after_step, checkpoint_state=checkpoint_state)
        return finish_training(stage, model.objects["generator"], labels, num_classes,
                               total_steps)


def log_variety(stage, step: int, ratios: list[float | None], classes: list[str]) -> None:
    """The grid's spread per class over that of real training images (`variety`), in the
    stage's stats and, for the least varied class, in its log."""
    known = {name: round(r, 3) for name, r in zip(classes, ratios, strict=True) if r is not None}
    if not known:
        return
    worst = min(known, key=known.get)
    mean = float(sum(known.values())) / len(known)
    stage.records.stats(stage.name, step, spread_ratio=round(mean, 3),
                        worst_spread_ratio=known[worst], spread_ratio_per_class=known)
    stage.records.info(f"{stage.name} step {step}: the grid's images differ "
                       f"{100 * mean:.0f} % as much as real ones "
                       f"(least: {worst}, {100 * known[worst]:.0f} %)")
