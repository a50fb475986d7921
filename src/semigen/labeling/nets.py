"""Classifier networks. Each is rebuilt from ``(name, in_channels, num_classes)``, which a
checkpoint stores beside its weights."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1))


class SmallCNN(nn.Module):
    """A small CNN for 8-32 px images on a CPU: three stages of two 3x3 convolutions, pooled
    between stages, global average pooling at the end (so any input size works)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_block(in_channels, w), conv_block(w, w), nn.MaxPool2d(2, ceil_mode=True),
            conv_block(w, 2 * w), conv_block(2 * w, 2 * w), nn.MaxPool2d(2, ceil_mode=True),
            conv_block(2 * w, 4 * w), conv_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class WideBasic(nn.Module):
    """Pre-activation residual block of a Wide ResNet (BN-ReLU-conv, twice)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin, momentum=0.001), nn.BatchNorm2d(cout,
                                                                                 momentum=0.001)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.act = nn.LeakyReLU(0.1)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = self.act(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.act(self.bn2(self.conv1(out))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-28-2, the backbone of FixMatch's CIFAR-10 results (1.5 M parameters)."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 2):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for stage in range(3):
            for i in range(n):
                cin = widths[stage] if i == 0 else widths[stage + 1]
                layers.append(WideBasic(cin, widths[stage + 1], 2 if i == 0 and stage else 1))
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[3], momentum=0.001),
                                      nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x):
        return self.head(self.features(x))


def build(name: str, in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """The network in channels-last layout: its convolutions run about a fifth faster on a CPU
    (and use the tensor cores' layout on a GPU), and inputs need no conversion."""
    if name == "cnn":
        net = SmallCNN(in_channels, num_classes, width)
    elif name == "wrn28_2":
        net = WideResNet(in_channels, num_classes)
    else:
        raise ValueError(f"unknown network '{name}' (networks: cnn, wrn28_2)")
    return net.to(memory_format=torch.channels_last)


def from_checkpoint(state: dict, use_ema: bool = True) -> nn.Module:
    """The classifier of a checkpoint, from the checkpoint alone, in eval mode; by default
    with its EMA weights (the ones evaluation and pseudo-labels use)."""
    from ..checkpoint import reading
    with reading(state, "classifier"):
        if use_ema:
            weights = {k.removeprefix("module."): v for k, v in state["ema"].items()
                       if k.startswith("module.")}
        else:
            weights = state["model"]
        net = build(**state["net"])
        net.load_state_dict(weights)
    return net.eval()
