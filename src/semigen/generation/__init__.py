"""(2) generate: class-conditional generators behind one interface.

Backends stand side by side as a table (`backends.py`, ``generate.backend``): ``gan`` (a
conditional GAN, the default) and ``diffusion`` (a class-conditional UNet with classifier-free
guidance). The rest of semigen (joint rounds, export, evaluation, the report) uses only this:

- `train_generator(run, round_index, init)`: train the configured backend into an open run;
- `from_checkpoint(state)`: any backend's generator, rebuilt from its checkpoint alone;
- `sample(generator, labels, seeds)`: images in [-1, 1], image i from ``seeds[i]`` alone,
  whatever the batch it is drawn in;
- `save_grid`: the per-class grid of fixed seeds that training writes to ``RUN/samples/``;
- `generate_per_class`: images of every class in order, each from its own seed;
- `variations_per_class`: variations of given real images of every class (backends with
  ``VARIES_REAL_IMAGES``: diffusion).

Every generator is an `nn.Module` with ``sample(labels, seeds)`` and ``settings()``, and every
generator checkpoint names its ``backend``."""

from __future__ import annotations

import torch

from ..checkpoint import CheckpointError
from .backends import BACKENDS
from .sampling import (
    generate_per_class,
    grid_seeds,
    noise_from_seeds,
    sample,
    save_grid,
    variations_per_class,
)
from .train import STAGE, backend_of, check_backend, model_fields, train_generator

__all__ = ["BACKENDS", "STAGE", "backend_of", "check_backend", "from_checkpoint",
           "generate_per_class", "grid_seeds", "model_fields", "noise_from_seeds", "sample",
           "save_grid", "train_generator", "variations_per_class"]


def from_checkpoint(state: dict, use_ema: bool = True, guidance: float | None = None,
                    sample_steps: int | None = None) -> torch.nn.Module:
    """The generator of a checkpoint, in eval mode. A diffusion model samples with `guidance`
    and `sample_steps` (None: those it was trained with); a GAN has neither."""
    backend = backend_of(state)
    if backend not in BACKENDS:
        raise CheckpointError(f"{state.get('loaded_from', 'checkpoint')}: a generator of "
                              f"backend {backend!r}, which this semigen does not know "
                              f"({', '.join(BACKENDS)})")
    return BACKENDS[backend].from_checkpoint(state, use_ema, guidance, sample_steps)
