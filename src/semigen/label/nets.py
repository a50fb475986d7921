"""Classifier networks. Each is rebuilt from ``(name, in_channels, num_classes)``, which a
checkpoint stores beside its weights."""

from __future__ import annotations

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


def build(name: str, in_channels: int, num_classes: int) -> nn.Module:
    if name == "cnn":
        return SmallCNN(in_channels, num_classes)
    raise ValueError(f"unknown network '{name}' (networks: cnn)")


def from_checkpoint(state: dict, use_ema: bool = True) -> nn.Module:
    """The classifier of a checkpoint, from the checkpoint alone, in eval mode; by default
    with its EMA weights (the ones evaluation and pseudo-labels use)."""
    if use_ema:
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()
                   if k.startswith("module.")}
    else:
        weights = state["model"]
    net = build(**state["net"])
    net.load_state_dict(weights)
    return net.eval()
