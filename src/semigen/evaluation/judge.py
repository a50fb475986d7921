"""A judge of generated images for every data set, offline.

A built-in data set has an evaluator network trained on its full labels (`images`); a user's
own folders have no full labels, and ImageNet's Inception features need a download and suit
small non-ImageNet images poorly (Stein et al. 2023 recommend self-supervised features). So the
judge of a user's images is a self-supervised network of its own:

- **features**: SimCLR (`represent.pretrain`) on the user's training images only (labeled and
  unlabeled, never the test images, never a generated one), with another architecture than
  the run's classifier (`evaluator_net`), trained once and cached per data fingerprint under
  ``data.cache_dir/judges/``; or, with ``evaluate.features``, a torchvision or timm backbone
  the user has weights for (DINOv2, say);
- **class consistency**: a linear probe on those features, trained on the labeled images, with
  the number of labels it stood on and its own held-out (cross-validated) accuracy beside it,
  so that its weight is clear.

In its features `images.image_metrics` measures the Fréchet distance, KID, precision and
recall (`precision_recall`): low diversity shows as low recall. Validated against the full-label
evaluator on Fashion-MNIST (BENCHMARKS.md, "A judge for every data set")."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from torch import nn

from ..config import Config, make_config
from ..data import Dataset, to_float
from ..data.sources import fingerprint
from ..labeling import nets, represent
from ..run import open_run, read_metrics
from ..stage import open_stage
from .images import evaluator_net

log = logging.getLogger("semigen")

# Raise with any change to how the judge's features are trained that its recipe does not show.
JUDGE_VERSION = 1
# Images per SimCLR step (two views each). The judge's WideResNet costs about five times the
# run's cnn per image; 1,000 steps of 64 keep it to minutes on a CPU.
JUDGE_BATCH = 64


class FeatureNetwork(nn.Module):
    """uint8 images -> a network's features as float64 (what FID, KID and precision compare)."""

    def __init__(self, module: nn.Module, num_features: int):
        super().__init__()
        self.module, self.num_features = module.eval(), num_features  # torchmetrics reads it

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(to_float(images)).double()


class ProbeClassifier(nn.Module):
    """A linear probe on a feature network as a classifier of float images ([-1, 1])."""

    def __init__(self, features: nn.Module, probe: LogisticRegression, num_classes: int):
        super().__init__()
        self.features = features
        weight = torch.zeros(num_classes, probe.coef_.shape[1])
        bias = torch.zeros(num_classes)
        if len(probe.classes_) == 2:  # sklearn's binary model: one row for the second class
            weight[probe.classes_[1]], bias[probe.classes_[1]] = (
                torch.from_numpy(probe.coef_[0]).float(), float(probe.intercept_[0]))
        else:
            weight[probe.classes_] = torch.from_numpy(probe.coef_).float()
            bias[probe.classes_] = torch.from_numpy(probe.intercept_).float()
        self.head = nn.Linear(weight.shape[1], num_classes)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.normalize(self.features(x).float(), dim=1))


def judge_config(cfg: Config, data: Dataset) -> Config:
    """The recipe of the data set's judge features: SimCLR for ``evaluate.judge_steps`` steps,
    with the evaluator's architecture (unlike the run's classifier), in a cache folder keyed
    by the training images, their size and everything else that decides its weights."""
    recipe = make_config(**{
        "label.net": evaluator_net(cfg.label.backbone or cfg.label.net),
        "data.source": cfg.data.source, "data.labels_csv": cfg.data.labels_csv,
        "data.cache_dir": cfg.data.cache_dir, "data.fmnist_dir": cfg.data.fmnist_dir,
        "data.image_size": cfg.data.image_size, "data.max_side": cfg.data.max_side,
        "data.channels": cfg.data.channels, "data.labels_per_class": cfg.data.labels_per_class,
        "data.split_seed": cfg.data.split_seed, "data.rotate": cfg.data.rotate,
        "data.hflip": cfg.data.hflip, "label.pretrain_steps": cfg.evaluate.judge_steps,
        "label.pretrain_batch_size": JUDGE_BATCH, "label.width": 32,
        "run.progress": str(cfg.run.progress), "runtime.device": cfg.runtime.device,
        "runtime.threads": cfg.runtime.threads})
    h, w, c = data.shape
    key = {"images": fingerprint(sorted(data.labeled.ids + data.unlabeled.ids)),
           "source": str(Path(cfg.data.source).expanduser().resolve())
           if Path(cfg.data.source).expanduser().is_dir() else cfg.data.source,
           "shape": [h, w, c], "net": recipe.label.net, "steps": cfg.evaluate.judge_steps,
           "label": {k: getattr(recipe.label, k) for k in ("pretrain_batch_size", "pretrain_lr",
                                                          "pretrain_temperature", "width")},
           "seed": recipe.runtime.seed, "version": JUDGE_VERSION,
           "torch": torch.__version__.split("+")[0]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{Path(cfg.data.source).name or 'data'}-{h}x{w}x{c}-{digest}"
    recipe.run.out = str(Path(cfg.data.cache_dir).expanduser() / "judges" / name)
    return recipe


def judge_features(cfg: Config, data: Dataset, device: str = "cpu"
                   ) -> tuple[FeatureNetwork, dict]:
    """The judge's feature network for `data` and what it is: the user's backbone weights
    (``evaluate.features``), else the self-supervised judge (trained on first use, cached)."""
    if cfg.evaluate.features:
        net = nets.Backbone(cfg.evaluate.features_net, len(data.classes))
        note = nets.load_backbone_weights(net, cfg.evaluate.features_net, cfg.evaluate.features,
                                          "evaluate.features")
        dim = net.head.in_features
        return FeatureNetwork(net.features.to(device), dim), {
            "network": f"{cfg.evaluate.features_net} with your weights ({note})",
            "weights": cfg.evaluate.features}
    recipe = judge_config(cfg, data)
    out = Path(recipe.run.out)
    if "judge" not in read_metrics(out):
        log.info(f"training the judge's self-supervised features ({recipe.label.net}, "
                 f"{recipe.label.pretrain_steps} steps) on the training images (once; cached in "
                 f"{out})")
        with open_run(recipe, data=data) as judge_run, open_stage(judge_run, "judge") as stage:
            net = nets.build(**nets.arguments(recipe.label.net, data.shape, len(data.classes),
                                              recipe.label.width))
            colour = not represent.colour_tells_classes_apart(data.labeled.images,
                                                              data.labeled.labels)
            represent.pretrain(stage.part(represent.STAGE, "auto"), data, net, colour)
            stage.records.update_metrics("judge", {"steps": recipe.label.pretrain_steps,
                                                   "net": recipe.label.net})
    features = represent.load_representation(out, recipe, data, device)
    dim = features(to_float(torch.zeros(1, *data.shape).permute(0, 3, 1, 2)).to(device)
                   ).shape[1]
    return FeatureNetwork(features, dim), {
        "network": (f"semigen judge (self-supervised {recipe.label.net}, "
                    f"{recipe.label.pretrain_steps} steps on the training images only)"),
        "path": str(out)}


def probe_classifier(features: FeatureNetwork, data: Dataset) -> tuple[nn.Module, dict]:
    """A linear probe on the judge's features trained on the labeled images, as a classifier,
    and its weight: how many labels it stood on and its cross-validated accuracy on them."""
    x = F.normalize(features(torch.from_numpy(data.labeled.images).permute(0, 3, 1, 2)).float(),
                    dim=1).numpy()
    y = data.labeled.labels
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(x, y)
    folds = min(5, int(np.bincount(y).min()))
    held_out = (float(cross_val_score(LogisticRegression(max_iter=2000, C=1.0), x, y,
                                      cv=folds).mean()) if folds >= 2 else None)
    return ProbeClassifier(features.module, probe, len(data.classes)), {
        "by": "a linear probe on the judge's features, trained on the labeled images",
        "labels": len(y), "held_out_accuracy": held_out, "folds": folds if folds >= 2 else 0}
