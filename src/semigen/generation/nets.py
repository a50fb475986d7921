"""A class-conditional GAN that holds up with few images per class (BigGAN/SNGAN family):
a generator with class-conditional batch norm, and a spectral-norm discriminator with a
projection head (Miyato & Koyama 2018). Both are rebuilt from plain arguments, which a checkpoint
stores beside the weights."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def upsamplings(side: int) -> int:
    """How many doublings take a 4x4 start to at least `side` (at least one)."""
    return max(1, math.ceil(math.log2(side / 4)))


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias are looked up per class."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class GeneratorBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(cin, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = ConditionalBatchNorm2d(cout, num_classes)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x, y):
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    """(z, class) -> image in [-1, 1] of `image_shape` (H, W, C). It draws at 4 * 2^k px and
    resizes to H x W when that is not a power of two (28 px: drawn at 32)."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], z_dim: int = 128,
                 width: int = 64):
        super().__init__()
        h, w, c = image_shape
        self.image_shape, self.z_dim = (h, w, c), z_dim
        steps = upsamplings(max(h, w))
        # 4 * width channels at 4x4, halved at each doubling after the first down to `width`:
        # the large maps get the thin layers, which is what keeps a CPU step affordable.
        channels = [4 * width] + [max(width, 4 * width >> i) for i in range(steps)]
        self.channels = channels[0]
        self.project = nn.Linear(z_dim, 4 * 4 * self.channels)
        self.blocks = nn.ModuleList(GeneratorBlock(cin, cout, num_classes)
                                    for cin, cout in pairwise(channels))
        self.out = nn.Sequential(nn.BatchNorm2d(channels[-1]), nn.ReLU(),
                                 nn.Conv2d(channels[-1], c, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), self.channels, 4, 4)
        for block in self.blocks:
            x = block(x, y)
        x = self.out(x)
        h, w, _ = self.image_shape
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True,
                              align_corners=False)
        return x


class DiscriminatorBlock(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool, first: bool):
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        h = x if self.first else F.relu(x)  # the first block sees the image itself
        h = self.conv2(F.relu(self.conv1(h)))
        skip = self.skip(x)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class Discriminator(nn.Module):
    """Image, class -> realness score: a linear score of pooled features plus their projection
    onto the class embedding."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], width: int = 64):
        super().__init__()
        h, w, c = image_shape
        self.channels = 2 * width
        downs = upsamplings(max(h, w))  # down to about 4x4
        # `width` channels at full resolution, 2 * width below it (the costly map stays thin).
        channels = [c, width] + [self.channels] * downs
        self.blocks = nn.Sequential(*(
            DiscriminatorBlock(cin, cout, downsample=i < downs, first=i == 0)
            for i, (cin, cout) in enumerate(pairwise(channels))))
        self.score = spectral_norm(nn.Linear(self.channels, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, self.channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.score(features).squeeze(1) + (self.embed(y) * features).sum(dim=1)
