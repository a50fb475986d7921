"""GAN losses and differentiable augmentation, as pure functions of tensors.

DiffAugment (Zhao et al. 2020) applies the same kind of random colour, translation and cutout
to real and generated images, in both the discriminator's and the generator's step, so that a
discriminator trained on few images cannot simply memorise them. Each function takes a
`torch.Generator` so that a run is reproducible."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_hinge(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def generator_hinge(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The auxiliary classifier's cross-entropy (AC-GAN): the discriminator learns the classes
    from real images, and the generator is pushed to make images it recognises as theirs."""
    return F.cross_entropy(logits.float(), labels)


def discriminator_loss(output, labels: torch.Tensor, class_weight: float = 0.0):
    """The discriminator's loss on one pass over `cat(real, fake)`, and its class term (None
    without an auxiliary classifier). `output` is the discriminator's scores, or its (scores,
    logits) when it classifies; `labels` are the real images' classes."""
    scores, logits = output if isinstance(output, tuple) else (output, None)
    loss = discriminator_hinge(*scores.chunk(2))
    if logits is None:
        return loss, None
    term = class_loss(logits[:len(labels)], labels)  # learnt from the real images only
    return loss + class_weight * term, term


def generator_loss(output, labels: torch.Tensor, class_weight: float = 0.0):
    """The generator's loss on the discriminator's `output` for generated images of `labels`,
    and its class term (None without an auxiliary classifier)."""
    scores, logits = output if isinstance(output, tuple) else (output, None)
    loss = generator_hinge(scores)
    if logits is None:
        return loss, None
    term = class_loss(logits, labels)
    return loss + class_weight * term, term


def mode_seeking(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The mode-seeking term (Mao et al. 2019, MSGAN): images i and i + n/2 share a class, and
    the further apart their noise is, the further apart the generator must draw them; it is the
    inverse of how far apart they are per unit of noise distance, so it falls as the images of
    a class spread out and grows without bound as they collapse onto one. `images` may be the
    images or any features of them (N x ...)."""
    first, second = images.float().flatten(1).chunk(2)
    noise_a, noise_b = noise.float().chunk(2)
    apart = (first - second).abs().mean(1) / (noise_a - noise_b).abs().mean(1)
    return 1 / (apart.mean() + 1e-5)


def _uniform(x: torch.Tensor, generator: torch.Generator | None, *shape) -> torch.Tensor:
    return torch.rand(len(x), *shape, generator=generator, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, saturation (colour images) and contrast, per image."""
    x = x + (_uniform(x, generator, 1, 1, 1) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_uniform(x, generator, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, filling with zeros (grid sampling keeps
    the operation differentiable with respect to the pixels)."""
    shift = (_uniform(x, generator, 2) * 2 - 1) * ratio * 2  # in [-1, 1] grid units
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, ratio: float = 0.5,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one square of `ratio` of the image side, at a random place in each image."""
    n, _, h, w = x.shape
    size_h, size_w = max(1, round(h * ratio)), max(1, round(w * ratio))
    centre = _uniform(x, generator, 2)
    top = (centre[:, 0] * (h - size_h + 1)).long().clamp(max=h - size_h)
    left = (centre[:, 1] * (w - size_w + 1)).long().clamp(max=w - size_w)
    # inside = row inside AND column inside: the outer product of two masks, not an N x H x W
    # comparison (a third of DiffAugment's time at 28 px)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    rows_in = ((rows >= top[:, None]) & (rows < (top + size_h)[:, None])).to(x.dtype)
    cols_in = ((cols >= left[:, None]) & (cols < (left + size_w)[:, None])).to(x.dtype)
    return x * (1 - rows_in[:, None, :, None] * cols_in[:, None, None, :])


def diff_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """colour, then translation, then cutout: DiffAugment's recipe for small data sets."""
    return cutout(translation(color(x, generator), generator=generator), generator=generator)
