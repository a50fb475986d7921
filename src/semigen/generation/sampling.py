"""How every backend's generator is sampled: image i from seeds[i] alone, whatever the batch it
is drawn in, and the per-class grids of fixed seeds that training writes to ``RUN/samples/``."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from ..data import to_float, to_uint8
from ..runtime import mix_seed


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


def save_grid(generator: torch.nn.Module, num_classes: int, per_class: int, path: Path
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per class, `per_class` images each, fixed seeds; returns the images (in
    [-1, 1]) and their classes."""
    was_training = generator.training
    generator.eval()
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = sample(generator, labels, grid_seeds(per_class, num_classes))
    generator.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=per_class, normalize=True, value_range=(-1, 1), padding=1)
    return images, labels


@torch.no_grad()
def generate_per_class(generator: torch.nn.Module, num_classes: int, per_class: int, seed: int,
                       batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images, `per_class` of each class, each from its own seed; and their classes."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    seeds = [mix_seed(seed, c, i) for c in range(num_classes) for i in range(per_class)]
    chunks = [to_uint8(sample(generator, labels[i:i + batch_size], seeds[i:i + batch_size]))
              for i in range(0, len(labels), batch_size)]
    return torch.cat(chunks).cpu(), labels


@torch.no_grad()
def variations_per_class(generator: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         num_classes: int, per_class: int, strength: float, seed: int,
                         batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 variations of real `images` (uint8 N x C x H x W) of known `labels`, `per_class` of
    each class, its images taken in turn, each noised to `strength` and denoised towards its
    class from its own seed: new images whose class comes from a true label, not from a
    pseudo-label (backends whose `sample` takes a `start`: diffusion)."""
    pick = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members):  # its labeled images in turn
            pick.append(members[torch.arange(per_class) % len(members)])
    pick = torch.cat(pick)
    starts, classes = to_float(images[pick]), labels[pick]
    seeds = [mix_seed(seed, int(c), i) for i, c in enumerate(classes.tolist())]
    chunks = [to_uint8(generator.sample(classes[i:i + batch_size], seeds[i:i + batch_size],
                                        start=starts[i:i + batch_size], strength=strength))
              for i in range(0, len(classes), batch_size)]
    return torch.cat(chunks).cpu(), classes
