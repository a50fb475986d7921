"""How varied a generator's images of each class are, cheaply enough to log during training:
the mean distance between two generated images of a class, over the same between two real
training images of the class (pixel space). The mean pairwise distance does not depend on how
many images it is taken over, so the 8 images of a grid row can be set beside 64 real ones.
Near 0: the generator draws one image per class, whatever its noise; about 1: its images differ
as much as real ones do. `semigen evaluate` measures variety properly, in a feature network's
space (recall and coverage beside real against real)."""

from __future__ import annotations

import numpy as np
import torch

from ..data import to_float

# Real training images per class that the spread of a generated grid row is set beside.
REAL_PER_CLASS = 64


def spread(images: torch.Tensor) -> float:
    """The mean L2 distance between two different images of `images` (float, N x C x H x W),
    per pixel (so that image size does not change its scale); 0 for fewer than two."""
    if len(images) < 2:
        return 0.0
    flat = images.flatten(1).float()
    distances = torch.cdist(flat, flat)
    n = len(flat)
    return (distances.sum() / (n * (n - 1))).item() / flat.shape[1] ** 0.5


def real_by_class(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0
                  ) -> list[torch.Tensor]:
    """Up to `REAL_PER_CLASS` training images of each class (uint8 N x H x W x C), as floats in
    [-1, 1], N x C x H x W."""
    pick = np.random.default_rng(seed)
    out = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        chosen = pick.permutation(members)[:REAL_PER_CLASS]
        out.append(to_float(torch.from_numpy(images[chosen]).permute(0, 3, 1, 2)))
    return out


def real_spreads(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0
                 ) -> list[float]:
    """The spread of each class's real training images (`real_by_class`): what `spread_ratios`
    sets a grid's images beside, measured once per stage."""
    return [spread(reference) for reference in real_by_class(images, labels, num_classes, seed)]


def spread_ratios(generated: torch.Tensor, labels: torch.Tensor, real: list[float]
                  ) -> list[float | None]:
    """Per class, the spread of its generated images over that of its real ones, `real` from
    `real_spreads` (None where the class has fewer than two real images)."""
    labels = labels.cpu()
    return [spread(generated[labels == c].cpu()) / base if base > 0 else None
            for c, base in enumerate(real)]
