"""The generation backends, one module each, as a table: name -> module. Every backend module
is a `Backend`: the few names below, which the training stage, sampling, export, evaluation
and the report use and nothing else.

Adding a backend is one module with these names and one entry in `BACKENDS` (and its quick
budget in ``config.BACKEND_BUDGET``, the home of defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..config import GenerateConfig
from ..training import Trainable
from . import diffusion, gan

# One training step: a batch of real images in [-1, 1], their classes and the step's random
# generator -> the losses to log.
Step = Callable[[torch.Tensor, torch.Tensor, torch.Generator], dict]


@runtime_checkable
class Backend(Protocol):
    # The generate.* fields that decide its networks (a run continues only with the same).
    MODEL_FIELDS: tuple[str, ...]
    # The entries of its generator's settings() that, besides the weights and the seed,
    # decide an image (the manifest of `semigen sample` records them).
    SAMPLING_FIELDS: tuple[str, ...]
    # Whether its generator's sample() also takes `start` images and a `strength`, and makes
    # variations of them (a joint round can then start from the true labeled images).
    VARIES_REAL_IMAGES: bool

    def build(self, gen: GenerateConfig, num_classes: int, shape: tuple[int, int, int]
              ) -> Trainable:
        """Its networks, EMA and optimizers, by checkpoint entry."""

    def trainer(self, model: Trainable, gen: GenerateConfig, fabric) -> Step:
        """One training step; every random draw from the step's generator."""

    def sync(self, model: Trainable, fabric) -> None:
        """What DDP ranks average before grids and checkpoints."""

    def from_checkpoint(self, state: dict, use_ema: bool = True,
                        guidance: float | None = None, sample_steps: int | None = None
                        ) -> nn.Module:
        """Its generator rebuilt from a checkpoint alone: an nn.Module with
        ``sample(labels, seeds)`` and ``settings()``."""

    def describe(self, settings: dict) -> str:
        """How the report names it."""


BACKENDS: dict[str, Backend] = {"gan": gan, "diffusion": diffusion}
