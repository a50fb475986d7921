"""Generated-image metrics with a feature network that took no part in training.

For a built-in data set the evaluator is semigen's own classifier trained on the data set's full
training labels (``all-labels``), once, cached under ``data.cache_dir/evaluators/``. Its
penultimate features feed torchmetrics' FID and KID, and its predictions give class consistency:
how often a generated image is recognised as the class it was asked for. Every score says which
feature network and how many images it used."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .. import checkpoint
from ..config import BUILTINS, Config, resolve
from ..data import to_float, to_uint8
from ..labeling import nets
from ..runtime import mix_seed

log = logging.getLogger("semigen")


class EvaluatorFeatures(nn.Module):
    """uint8 images -> the evaluator's penultimate features (what FID and KID compare)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.features = classifier.features
        self.num_features = classifier.head.in_features  # torchmetrics reads this

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(to_float(images)).double()


def evaluator_run(cfg: Config, shape: tuple[int, int, int], steps: int) -> Path:
    h, w, c = shape
    name = f"{cfg.data.source}-{h}x{w}x{c}-{steps}steps"
    return Path(cfg.data.cache_dir).expanduser() / "evaluators" / name


def load_evaluator(cfg: Config, shape: tuple[int, int, int], steps: int
                   ) -> tuple[nn.Module, dict]:
    """The evaluator classifier of `cfg`'s built-in data set at image `shape` (trained and
    cached on first use), with a description: where it is, its test accuracy, its budget."""
    if cfg.data.source not in BUILTINS:
        raise ValueError(f"image metrics need a built-in data set for their evaluator network "
                         f"(data.source is {cfg.data.source!r})")
    out = evaluator_run(cfg, shape, steps)
    latest = out / "checkpoints" / "label" / "latest.pt"
    state = checkpoint.load(latest) if latest.exists() else None
    if state is None or state["step"] < steps:
        from ..labeling.train import train
        log.info(f"training the evaluator classifier for {cfg.data.source} on all its training "
                 f"labels (once; cached in {out})")
        train(resolve(overrides={
            "data.source": cfg.data.source, "data.cache_dir": cfg.data.cache_dir,
            "data.fmnist_dir": cfg.data.fmnist_dir, "data.image_size": cfg.data.image_size,
            "data.channels": cfg.data.channels, "label.mode": "all-labels",
            "label.steps": steps, "label.batch_size": 64, "run.out": str(out),
            "run.progress": str(cfg.run.progress), "runtime.device": cfg.runtime.device}))
        state = checkpoint.load(latest)
    description = {"network": f"semigen evaluator ({state['net']['name']}, all-labels, "
                              f"{state['step']} steps)", "path": str(latest),
                   "test_accuracy": _final_test_accuracy(out)}
    return nets.from_checkpoint(state), description


def _final_test_accuracy(run: Path) -> float | None:
    import json
    path = run / "metrics.json"
    return json.loads(path.read_text())["label"].get("test_accuracy") if path.exists() else None


@torch.no_grad()
def generate_per_class(generator: nn.Module, num_classes: int, per_class: int, seed: int,
                       batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images, `per_class` of each class, each from its own seed; and their classes."""
    from ..generation.train import sample
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    seeds = [mix_seed(seed, c, i) for c in range(num_classes) for i in range(per_class)]
    chunks = [to_uint8(sample(generator, labels[i:i + batch_size], seeds[i:i + batch_size]))
              for i in range(0, len(labels), batch_size)]
    return torch.cat(chunks).cpu(), labels


def _distances(features: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> dict:
    # KID keeps every feature in memory and warns about it; ours are 128-d and few.
    warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*will save")
    fid = FrechetInceptionDistance(feature=features, normalize=False, reset_real_features=True)
    kid = KernelInceptionDistance(feature=features, normalize=False,
                                  subset_size=min(1000, len(real), len(fake)))
    for metric in (fid, kid):
        for i in range(0, len(real), 1000):
            metric.update(real[i:i + 1000], real=True)
        for i in range(0, len(fake), 1000):
            metric.update(fake[i:i + 1000], real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": fid.compute().item(), "kid": kid_mean.item(), "kid_std": kid_std.item()}


@torch.no_grad()
def image_metrics(generator: nn.Module, evaluator: nn.Module, real_images: np.ndarray,
                  real_labels: np.ndarray, classes: list[str], per_class: int,
                  seed: int = 0) -> dict:
    """FID, KID and class consistency of `generator` against real held-out images, overall and
    per class. `real_images` are uint8 N x H x W x C."""
    evaluator = evaluator.eval().cpu()
    generator = generator.eval()
    fake, fake_labels = generate_per_class(generator, len(classes), per_class, seed)
    real = torch.from_numpy(real_images).permute(0, 3, 1, 2).contiguous()
    features = EvaluatorFeatures(evaluator)
    predicted = torch.cat([evaluator(to_float(fake[i:i + 1000])).argmax(1)
                           for i in range(0, len(fake), 1000)])
    right = (predicted == fake_labels).float()
    found = {"n_real": len(real), "n_fake": len(fake),
             **_distances(features, real, fake),
             "class_consistency": right.mean().item(), "per_class": {}}
    dims = features.num_features
    for c, name in enumerate(classes):
        real_c = real[torch.from_numpy(real_labels == c)]
        fake_c = fake[fake_labels == c]
        found["per_class"][name] = {
            "n_real": len(real_c), "n_fake": len(fake_c),
            "class_consistency": right[fake_labels == c].mean().item()}
        # A user's small test folder may hold 0 or 1 image of a class: no distance then.
        if len(real_c) >= 2:
            found["per_class"][name] |= _distances(features, real_c, fake_c)
    found["worst_class_consistency"] = min(v["class_consistency"]
                                           for v in found["per_class"].values())
    if min(per_class, len(real)) < 2 * dims:
        found["warning"] = (f"per-class FID uses {per_class} generated images against "
                            f"{dims}-dimensional features: below 2x the dimension, it is biased "
                            "upwards; compare it only at equal N")
    return found
