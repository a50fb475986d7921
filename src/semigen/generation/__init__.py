"""(2) generate: class-conditional generators behind one interface.

Two backends stand side by side (``generate.backend``): ``gan`` (`gan.py`, a conditional GAN,
the default) and ``diffusion`` (`diffusion.py`, a class-conditional UNet with classifier-free
guidance). The rest of semigen (joint rounds, export, evaluation, the report) uses only this:

- `train(cfg, round_index, init)`: train the configured backend into ``cfg.run.out``;
- `from_checkpoint(state)`: any backend's generator, rebuilt from its checkpoint alone;
- `sample(generator, labels, seeds)`: images in [-1, 1], image i from ``seeds[i]`` alone,
  whatever the batch it is drawn in;
- `save_grid`: the per-class grid of fixed seeds that each backend writes to ``RUN/samples/``.

Every backend's generator is an `nn.Module` with ``sample(labels, seeds)``, and every
generator checkpoint names its ``backend`` (those written before there were two are GANs)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from ..checkpoint import CheckpointError
from ..config import GENERATE_BACKENDS as BACKENDS
from ..runtime import mix_seed

STAGE = "generate"


def train(cfg, round_index: int = 0, init: Path | None = None) -> dict:
    """Train ``cfg.generate.backend`` into ``cfg.run.out``; a joint round (``round_index`` >=
    1) continues from the generator checkpoint `init`."""
    if cfg.generate.backend == "diffusion":
        from .diffusion import train as train_backend
    else:
        from .gan import train as train_backend
    return train_backend(cfg, round_index, init)


def backend_of(state: dict) -> str:
    return state.get("backend", "gan")


def check_backend(state: dict, backend: str, path: Path) -> None:
    """Refuse to continue (resume, or refine in a joint round) another backend's generator."""
    found = backend_of(state)
    if found != backend:
        raise CheckpointError(f"{path}: holds a {found} generator, and this run's "
                              f"generate.backend is {backend}: use --generate.backend {found}, "
                              "or another --out for a new generator")


def from_checkpoint(state: dict, use_ema: bool = True, guidance: float | None = None,
                    sample_steps: int | None = None) -> torch.nn.Module:
    """The generator of a checkpoint, in eval mode. A diffusion model samples with `guidance`
    and `sample_steps` (None: those it was trained with); a GAN has neither."""
    backend = backend_of(state)
    if backend == "gan":
        from .gan import generator_from_checkpoint
        return generator_from_checkpoint(state, use_ema)
    if backend == "diffusion":
        from .diffusion import generator_from_checkpoint
        return generator_from_checkpoint(state, use_ema, guidance, sample_steps)
    raise CheckpointError(f"{state.get('loaded_from', 'checkpoint')}: a generator of backend "
                          f"{backend!r}, which this semigen does not know ({', '.join(BACKENDS)})")


def noise_from_seeds(seeds: list[int], *shape: int) -> torch.Tensor:
    """One standard normal tensor of `shape` per seed, on the CPU: the same for a seed
    whatever the batch or device."""
    return torch.stack([torch.randn(*shape, generator=torch.Generator().manual_seed(s))
                        for s in seeds])


@torch.no_grad()
def sample(generator: torch.nn.Module, labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Images in [-1, 1] (float32) for `labels`, image i from seeds[i] alone. The generator
    should be in eval mode."""
    if len(labels) != len(seeds):
        raise ValueError(f"one seed per image: {len(labels)} labels but {len(seeds)} seeds")
    return generator.sample(labels, seeds).float()


def grid_seeds(per_class: int, num_classes: int) -> list[int]:
    """The fixed seeds of the per-class grids: the same images at every checkpoint."""
    return [mix_seed(7, c, i) for c in range(num_classes) for i in range(per_class)]


def save_grid(generator: torch.nn.Module, num_classes: int, per_class: int, path: Path) -> None:
    """One row per class, `per_class` images each, fixed seeds."""
    was_training = generator.training
    generator.eval()
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = sample(generator, labels, grid_seeds(per_class, num_classes))
    generator.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=per_class, normalize=True, value_range=(-1, 1), padding=1)
