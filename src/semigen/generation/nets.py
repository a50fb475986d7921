"""A class-conditional GAN that holds up with few images per class: a generator with
class-conditional batch norm, and a spectral-norm discriminator with a projection head (Miyato &
Koyama 2018). Both are shallow and wide in DCGAN's way, one convolution per resolution, strided
or transposed, which is what a CPU can afford: at 28 px a step of the residual pair of SNGAN
costs four times as much (BENCHMARKS.md, module 2). Both are rebuilt from plain arguments, which
a checkpoint stores beside the weights."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .sampling import noise_from_seeds


def doublings(side: int) -> int:
    """How many doublings of the generator's start map reach `side`: as many as keep the start
    at 4-7 px (28 px: 7 -> 14 -> 28), at least one."""
    return max(1, math.floor(math.log2(side / 4)))


def start_size(side: int) -> int:
    """The side of the generator's first map: `side` drawn at its own resolution (28 px from 7,
    not 32 px resized), or just above it when halving does not reach 4-7 px exactly."""
    return math.ceil(side / 2 ** doublings(side))


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


class Generator(nn.Module):
    """(z, class) -> image in [-1, 1] of `image_shape` (H, W, C): a linear map to the start map,
    then per doubling class-conditional batch norm, ReLU and a 4x4 transposed convolution, and a
    3x3 convolution to the image's channels. It draws at the image's own size where halving
    reaches a 4-7 px start (28 px from 7x7), and otherwise just above it, resized (100 px: drawn
    at 112)."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], z_dim: int = 128,
                 width: int = 64):
        super().__init__()
        h, w, c = image_shape
        self.image_shape, self.z_dim = (h, w, c), z_dim
        side = max(h, w)
        self.start = start_size(side)
        # 4 * width channels at the start, halved at each doubling (8 at least): the large
        # maps get the thin layers, and every doubling costs about the same, so that 64 px
        # costs about what 28 px does (a 64-channel last layer at 64 px alone cost as much as
        # the whole 28 px generator)
        channels = [max(8, 4 * width >> i) for i in range(doublings(side) + 1)]
        self.channels = channels[0]
        self.project = nn.Linear(z_dim, self.start * self.start * self.channels)
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(ch, num_classes) for ch in channels)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
                                 for cin, cout in pairwise(channels))
        self.out = nn.Conv2d(channels[-1], c, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), self.channels, self.start, self.start)
        for norm, up in zip(self.norms, self.ups, strict=False):  # the last norm is the out's
            x = up(F.relu(norm(x, y)))
        x = torch.tanh(self.out(F.relu(self.norms[-1](x, y))))
        h, w, _ = self.image_shape
        if x.shape[-2:] != (h, w):  # in float32: antialiased resizing has no bfloat16 kernel
            x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def settings(self) -> dict:
        """How it samples, for the metrics that judge its images."""
        return {"backend": "gan"}

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Images of `labels`, image i from the noise of seeds[i] alone (the interface of
        every generation backend)."""
        device = self.project.weight.device
        return self(noise_from_seeds(seeds, self.z_dim).to(device), labels.to(device))


def group_std(maps: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """For each image of `maps` (N x C x H x W), how much the images of its group differ: the
    standard deviation over the group's members of each feature, averaged over the features
    (ProGAN's minibatch standard deviation, Karras et al. 2018, taken per group). N x 1 x H x W,
    to join the maps as one more channel."""
    _, index = groups.unique(return_inverse=True)
    flat = maps.float().flatten(1)
    count = torch.zeros(int(index.max()) + 1, device=maps.device).index_add_(
        0, index, torch.ones_like(index, dtype=flat.dtype))[:, None]
    mean = torch.zeros(len(count), flat.shape[1], device=maps.device).index_add_(
        0, index, flat) / count
    variance = torch.zeros_like(mean).index_add_(0, index, (flat - mean[index]) ** 2) / count
    spread = (variance + 1e-8).sqrt().mean(dim=1)[index].to(maps.dtype)
    return spread[:, None, None, None].expand(-1, 1, *maps.shape[2:])


class Discriminator(nn.Module):
    """Image, class -> realness score: per halving a 4x4 strided convolution (channels doubling
    per halving up to 4 * width at the smallest map), a 3x3 one at the smallest map, all spectrally
    normalised; then a linear score of the summed features plus their projection onto the class
    embedding. With `classify`, also class logits from the same features (the auxiliary
    classifier of AC-GAN), returned as a second output.

    With `minibatch_std`, the last convolution also sees how much the images of each image's
    group differ (`group_std`; a group is a class of real or of generated images in the batch):
    a generator that draws one image per class is told apart by that alone."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], width: int = 64,
                 classify: bool = False, minibatch_std: bool = False):
        super().__init__()
        h, w, c = image_shape
        downs = doublings(max(h, w))  # down to the generator's 4-7 px start
        # the generator's channels in reverse: 4 * width at the smallest map, halved per
        # doubling of the map (8 at least); at 28 px width, 2 * width, 4 * width
        channels = [c] + [max(8, 4 * width >> (downs - i)) for i in range(downs + 1)]
        self.minibatch_std = minibatch_std
        layers = []
        for i, (cin, cout) in enumerate(pairwise(channels)):
            last = i == downs
            cin += int(last and minibatch_std)  # the group's spread joins as a channel
            layers += [spectral_norm(nn.Conv2d(cin, cout, 3 if last else 4, stride=1 if last else 2,
                                               padding=1)), nn.LeakyReLU(0.1)]
        self.body = nn.Sequential(*layers)
        self.channels = channels[-1]
        self.score = spectral_norm(nn.Linear(self.channels, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, self.channels))
        self.classifier = spectral_norm(nn.Linear(self.channels, num_classes)) if classify \
            else None

    def features(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """The summed features of the last map (N x channels) that score and classify."""
        if not self.minibatch_std:
            return self.body(x).sum(dim=(2, 3))
        maps = self.body[:-2](x)
        maps = torch.cat([maps, group_std(maps, groups)], dim=1)
        return self.body[-2:](maps).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None,
                with_features: bool = False):
        """Scores (and logits, with an auxiliary classifier) of images `x` of classes `y`;
        `groups` (default: `y`) say which images `minibatch_std` compares; `with_features` also
        returns the features, as (output, features)."""
        features = self.features(x, y if groups is None else groups)
        score = self.score(features).squeeze(1) + (self.embed(y) * features).sum(dim=1)
        output = score if self.classifier is None else (score, self.classifier(features))
        return (output, features) if with_features else output
