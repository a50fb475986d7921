"""Augmented views for training, and a batch sampler that makes them reproducible.

Every training sample is drawn as ``(index, sample_seed)`` from a generator seeded by
``(seed, step)``, and its augmentation runs under that sample seed. So a batch depends only on
the seed and the step: a resumed run sees the same images and augmentations as an
uninterrupted one, whatever the number of loader workers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import kornia.augmentation as K
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2

from ..runtime import mix_seed


def weak(shape: tuple[int, int, int], hflip: bool) -> v2.Compose:
    """Flip (where the data set allows it) and shift by up to 1/8 of the side."""
    h, w, _ = shape
    steps = [v2.RandomHorizontalFlip()] if hflip else []
    steps.append(v2.RandomCrop((h, w), padding=max(1, round(h / 8)), padding_mode="reflect"))
    return v2.Compose(steps)


def strong(shape: tuple[int, int, int], hflip: bool) -> v2.Compose:
    """The weak view, then RandAugment and a cutout (the FixMatch recipe)."""
    return v2.Compose([weak(shape, hflip), v2.RandAugment(num_ops=2, magnitude=10),
                       v2.RandomErasing(p=1.0, scale=(0.02, 0.15), value=127)])


def contrastive_views(shape: tuple[int, int, int], hflip: bool, rotate: bool,
                      colour: bool = True, crop_scale: float = 0.4) -> K.AugmentationSequential:
    """Views for self-supervised learning, made on a whole batch at once (kornia draws every
    image's parameters; per-image torchvision transforms cost as much as the network).

    Position and scale (a resized crop), colour (jitter; for RGB also channel order, grey
    and inversion; unless `colour` is False because it tells the classes apart) and, where
    the data allow, mirror and rotation are nuisances: two views of one image differ in them,
    so features that match the views must ignore them. Works on floats in [0, 1]."""
    h, w, c = shape
    steps = [K.RandomResizedCrop((h, w), scale=(crop_scale, 1.0))]
    if hflip:
        steps.append(K.RandomHorizontalFlip())
    if rotate:
        steps.append(K.RandomRotation(180.0, p=1.0))
    if colour and c == 3:  # inversion: dark on light and light on dark alike
        steps += [K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomChannelShuffle(),
                  K.RandomGrayscale(p=0.2), K.RandomInvert(p=0.5)]
    elif colour:  # grey: inverted, the digits' 300 steps gave labels 80 % right, not 95 %
        steps.append(K.ColorJiggle(0.4, 0.4, p=0.8))
    return K.AugmentationSequential(*steps)


@contextlib.contextmanager
def seeded_cpu_rng(seed: int):
    """torch's global CPU generator seeded with `seed` inside the block, restored after. Only
    that one: torch.manual_seed would also queue a CUDA seeding with its call stack, which on a
    CUDA build costs about as much as making two views of an image."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]: the scale every network in semigen sees."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class Views(TorchDataset):
    """Images under zero or more transforms: item ``(i, seed)`` -> (view..., label, i).

    An item given as a plain index gets the untransformed image (evaluation)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 transforms: list[Callable] | None = None):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # N C H W, shares memory
        self.labels = torch.from_numpy(labels)
        self.transforms = transforms or []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.images[index]
        if seed is None or not self.transforms:
            views = [to_float(image)] * max(1, len(self.transforms))
        else:
            with seeded_cpu_rng(seed):  # the transforms draw from torch's global generator
                views = [to_float(t(image)) for t in self.transforms]
        return (*views, self.labels[index], index)


class StepBatchSampler(Sampler):
    """Endless batches of ``(index, sample_seed)``; batch t is a function of (seed, t) alone.

    With `weights`, index i is drawn with probability proportional to weights[i] (for
    class-balanced sampling); without, uniformly."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0,
                 weights: torch.Tensor | None = None):
        if size < 1:
            raise ValueError("cannot sample batches from an empty image set")
        if weights is not None and len(weights) != size:
            raise ValueError(f"{len(weights)} weights for {size} images")
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            g = torch.Generator().manual_seed(mix_seed(self.seed, step))
            if self.weights is None:
                indices = torch.randint(self.size, (self.batch_size,), generator=g).tolist()
            else:
                indices = torch.multinomial(self.weights, self.batch_size, replacement=True,
                                            generator=g).tolist()
            seeds = torch.randint(2**62, (self.batch_size,), generator=g).tolist()
            yield list(zip(indices, seeds, strict=True))
            step += 1


def endless_batches(fabric, images: np.ndarray, labels: np.ndarray, transforms: list,
                    batch_size: int, seed: int, start_step: int, workers: int = 0,
                    weights: torch.Tensor | None = None):
    """An iterator of batches ``(view..., label, index)`` on the fabric's device, from step
    `start_step` on; see `StepBatchSampler` for `weights`."""
    sampler = StepBatchSampler(len(labels), batch_size, seed, start_step, weights)
    loader = DataLoader(Views(images, labels, transforms), batch_sampler=sampler,
                        num_workers=workers, persistent_workers=workers > 0)
    return iter(fabric.setup_dataloaders(loader, use_distributed_sampler=False))
