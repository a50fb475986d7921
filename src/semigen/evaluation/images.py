"""Generated-image metrics with a feature network that took no part in training.

For a built-in data set the evaluator is a semigen classifier of another architecture than the
run's (``evaluator_net``) trained on the data set's full training labels (``all-labels``), once,
cached under ``data.cache_dir/evaluators/``. Its
penultimate features feed torchmetrics' FID and KID, and its predictions give class consistency:
how often a generated image is recognised as the class it was asked for. With
``evaluate.inception_weights`` (a torchvision Inception-v3 state dict, or ``download``), FID and
KID use Inception-v3's 2048-d pool features instead: for a user's folders, which have no
evaluator, and for comparisons with other tools. Every score says which feature network and how
many images it used."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .. import checkpoint
from ..config import BUILTINS, Config, make_config
from ..data import to_float
from ..generation import generate_per_class
from ..labeling import nets
from ..labeling.train import MODEL_FIELDS, train_classifier
from ..run import Layout, open_run, read_metrics
from .distances import beside_real, nearest_distances, precision_recall

log = logging.getLogger("semigen")


class EvaluatorFeatures(nn.Module):
    """uint8 images -> the evaluator's penultimate features (what FID and KID compare)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.features = classifier.features
        self.num_features = classifier.head.in_features  # torchmetrics reads this

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(to_float(images)).double()


class InceptionFeatures(nn.Module):
    """uint8 images -> Inception-v3's 2048-d pool features (resized to 299, ImageNet-normalised;
    gray repeated to RGB). The weights: a torchvision Inception-v3 state dict (loaded as data),
    or ``download`` for torchvision's ImageNet weights (needs a network once)."""

    num_features = 2048

    def __init__(self, weights: str):
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3
        if weights == "download":
            self.net = inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1)
        else:
            self.net = inception_v3(weights=None, aux_logits=True, init_weights=False)
            state = checkpoint.load_data_only(Path(weights).expanduser(),
                                              "torchvision Inception-v3 state dict")
            try:
                self.net.load_state_dict(state.get("state_dict", state))
                bad = checkpoint.first_non_finite(self.net.state_dict())
                if bad:
                    raise ValueError(f"{bad} holds inf or NaN")
            except (RuntimeError, AttributeError, KeyError, TypeError, ValueError) as e:
                raise checkpoint.CheckpointError(
                    f"--inception-weights {weights}: not a torchvision Inception-v3 state dict "
                    f"({type(e).__name__}: {(str(e) or 'empty').splitlines()[0][:200]})"
                ) from None
        self.net.fc = nn.Identity()  # the pool features, not the 1000 ImageNet logits
        self.net.eval()
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", antialias=True)
        return self.net((x - self.mean) / self.std).double()


def evaluator_net(classifier: str) -> str:
    """The evaluator's architecture: another family than the run's classifier, so that the two
    do not share blind spots (a generator that fools one network's quirks should not also fool
    its judge). A WideResNet (residual, strided) judges the cnn and any backbone; the cnn (plain,
    max-pooled) judges a WideResNet."""
    return "cnn" if classifier.startswith("wrn") else "wrn10_2"


def evaluator_config(cfg: Config, shape: tuple[int, int, int], steps: int) -> Config:
    """The recipe of the built-in data set's evaluator: all its training labels, an architecture
    unlike the classifier's (`evaluator_net`), `steps` steps; it runs in a cache folder keyed by
    everything that determines it (`evaluator_run`)."""
    recipe = make_config(**{
        "label.net": evaluator_net(cfg.label.backbone or cfg.label.net),
        "data.source": cfg.data.source, "data.cache_dir": cfg.data.cache_dir,
        "data.fmnist_dir": cfg.data.fmnist_dir, "data.image_size": cfg.data.image_size,
        "data.channels": cfg.data.channels, "label.mode": "all-labels",
        "label.steps": steps, "label.batch_size": 64, "label.width": 32,
        "label.pretrain_steps": 0, "run.progress": str(cfg.run.progress),
        "runtime.device": cfg.runtime.device, "runtime.threads": cfg.runtime.threads})
    recipe.run.out = str(evaluator_run(recipe, shape))
    return recipe


# The version of the evaluator's recipe: raise it with any change to how an evaluator is
# trained (its architecture, losses, schedule, data pipeline, a new field it reads) that the
# recipe's config does not show. The cache key holds it instead of a digest of source files,
# so that a refactor that changes no arithmetic keeps every user's cached evaluators (about 11
# minutes on Fashion-MNIST on 2 cores each).
EVALUATOR_VERSION = 1


# The fields an evaluator's training reads (all-labels mode: no representation stage, no
# calibration, no unlabeled stream); the semi-supervised ones cannot change its weights, so a
# new one of those keeps every cached evaluator. Data: every field but where files live.
EVALUATOR_FIELDS = {"label": ("mode", "net", "backbone", "weights", "steps", "batch_size", "lr",
                              "momentum", "weight_decay", "ema_decay", "width"),
                    "runtime": ("seed", "devices", "precision")}


def evaluator_key(recipe: Config, shape: tuple[int, int, int]) -> dict:
    """Everything that determines an evaluator network's weights: the recipe's data (less where
    files live), the label and runtime fields its training reads (`EVALUATOR_FIELDS`), the image
    shape, the version of torch and that of the evaluator's recipe (`EVALUATOR_VERSION`)."""
    whole = recipe.to_dict()
    fields = {section: {name: whole[section][name] for name in names}
              for section, names in EVALUATOR_FIELDS.items()}
    fields["data"] = {k: v for k, v in whole["data"].items()
                      if k not in ("cache_dir", "fmnist_dir", "download")}
    return {"config": fields, "shape": list(shape), "recipe_version": EVALUATOR_VERSION,
            "torch": torch.__version__.split("+")[0]}


def evaluator_run(recipe: Config, shape: tuple[int, int, int]) -> Path:
    h, w, c = shape
    digest = hashlib.sha256(json.dumps(evaluator_key(recipe, shape), sort_keys=True).encode())
    name = f"{recipe.data.source}-{h}x{w}x{c}-{recipe.label.steps}steps-{digest.hexdigest()[:12]}"
    return Path(recipe.data.cache_dir).expanduser() / "evaluators" / name


def load_evaluator(cfg: Config, shape: tuple[int, int, int], steps: int, data=None
                   ) -> tuple[nn.Module, dict]:
    """The evaluator classifier of `cfg`'s built-in data set at image `shape` (trained and
    cached on first use), with a description: where it is, its test accuracy, its budget."""
    if cfg.data.source not in BUILTINS:
        raise ValueError(f"image metrics need a built-in data set for their evaluator network "
                         f"(data.source is {cfg.data.source!r})")
    recipe = evaluator_config(cfg, shape, steps)
    out = Layout(recipe.run.out)
    latest = out.checkpoint("label")
    if not (latest.exists() and "label" in read_metrics(out.root)):  # or stopped: train (resume)
        log.info(f"training the evaluator classifier for {cfg.data.source} on all its training "
                 f"labels (once; cached in {out.root})")
        with open_run(recipe, MODEL_FIELDS, data=data if recipe.data == cfg.data else None
                      ) as evaluator:
            train_classifier(evaluator)
        out.evaluator.write_text(json.dumps(evaluator_key(recipe, shape), indent=1))
    state = checkpoint.load(latest)
    description = {"network": f"semigen evaluator ({state['net']['name']}, all-labels, "
                              f"{state['step']} steps)", "path": str(latest),
                   "test_accuracy": read_metrics(out.root)["label"].get("test_accuracy")}
    return nets.from_checkpoint(state), description


class ComputedFeatures(nn.Module):
    """The feature network's outputs, passed through as they are: FID and KID, overall and per
    class, then share one pass of the network over each image instead of four."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # torchmetrics reads this

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def embed_images(features: nn.Module, images: torch.Tensor, batch_size: int = 1000
                 ) -> torch.Tensor:
    """float64 features of uint8 N x C x H x W images, `batch_size` at a time."""
    if not len(images):
        return torch.zeros(0, features.num_features, dtype=torch.float64)
    return torch.cat([features(images[i:i + batch_size]).double()
                      for i in range(0, len(images), batch_size)])


def feature_distances(real: torch.Tensor, fake: torch.Tensor) -> dict:
    """FID and KID between two sets of features (`embed_images`)."""
    # KID keeps every feature in memory and warns about it; ours are 128-d and few.
    warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*will save")
    # Every image is already in this process: no gathering from other DDP ranks, which a fit
    # leaves behind when rank 0 evaluates.
    local = {"normalize": False, "sync_on_compute": False}
    passed = ComputedFeatures(real.shape[1])
    fid = FrechetInceptionDistance(feature=passed, reset_real_features=True, **local)
    kid = KernelInceptionDistance(feature=passed, subset_size=min(1000, len(real), len(fake)),
                                  **local)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from torch's global RNG:
        torch.manual_seed(0)  # the same images give the same KID
        kid_mean, kid_std = kid.compute()
    return {"fid": fid.compute().item(), "kid": kid_mean.item(), "kid_std": kid_std.item()}


def memorisation(fake: torch.Tensor, real: torch.Tensor, train: torch.Tensor,
                 n: int = 1000, seed: int = 0) -> dict:
    """Does the generator copy its training images? FID cannot tell: 100 training images
    copied over and over can score well. Held-out real images show how near a new image of the
    same data usually comes to a training image; generated images that come much nearer are
    (near-)copies. The idea of the data-copying test (Meehan et al., 2020), in pixel space.
    ``distance_ratio``: median nearest-training-image distance, generated / held-out real (1: as
    novel as new real images; near 0: copies). ``copy_rate``: the share of generated images
    nearer to a training image than 99 % of held-out real images are (about 0.01 when novel)."""
    pick = torch.Generator().manual_seed(seed)
    fake = fake[torch.randperm(len(fake), generator=pick)[:n]]
    real = real[torch.randperm(len(real), generator=pick)[:n]]
    distances = nearest_distances(torch.cat([fake, real]), train)  # one pass over `train`
    d_fake, d_real = distances[:len(fake)], distances[len(fake):]
    near = torch.quantile(d_real, 0.01)
    return {"distance_ratio": (d_fake.median() / d_real.median().clamp_min(1e-8)).item(),
            "copy_rate": (d_fake < near).float().mean().item(), "n_fake": len(fake),
            "n_real": len(real), "n_train": len(train), "space": "pixels"}


@torch.no_grad()
def recognised(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor
               ) -> torch.Tensor:
    """1.0 where `classifier` gives a uint8 N x C x H x W image its label, else 0.0."""
    classifier = classifier.eval().cpu()
    predicted = torch.cat([classifier(to_float(images[i:i + 1000])).argmax(1)
                           for i in range(0, len(images), 1000)])
    return (predicted == labels).float()


def variety_summary(per_class: dict) -> dict:
    """The classes' recall and coverage beside real against real (`beside_real`), averaged over
    the classes that have them, and the class whose generated images cover least of what its
    real ones cover: the figure that says whether a generator draws many images or one."""
    found = {name: v["variety"] for name, v in per_class.items() if "variety" in v}
    if not found:
        return {}
    mean = {key: float(np.mean([v[key] for v in found.values()]))
            for key in ("recall", "real_recall", "recall_ratio", "coverage", "real_coverage",
                        "coverage_ratio")}
    worst = min(found, key=lambda name: found[name]["recall_ratio"])
    return {"variety": mean | {"worst_class": worst,
                               "worst_recall_ratio": found[worst]["recall_ratio"],
                               "n_per_class": min(v["n"] for v in found.values()),
                               "k": next(iter(found.values()))["k"]}}


@dataclass
class Judge:
    """What judges generated images, having taken no part in training: a feature network (FID,
    KID) and a classifier (class consistency; None: not measured)."""
    features: nn.Module
    classifier: nn.Module | None


@torch.no_grad()
def image_metrics(generator: nn.Module, judge: Judge, real, classes: list[str], per_class: int,
                  seed: int = 0, train_images: np.ndarray | None = None,
                  second_judge: Judge | None = None) -> dict:
    """FID, KID, precision and recall of `generator` against the `real` held-out images
    (``.images``, uint8 N x H x W x C, and ``.labels``) in the space of the judge's features,
    the per-class FIDs and their mean (``class_fid``),
    and class consistency by its classifier, overall and per class; with the generator's
    `train_images`, how much it copies them (`memorisation`); with a `second_judge`, its
    figures on the same images under ``judge``."""
    generator = generator.eval()
    fake, fake_labels = generate_per_class(generator, len(classes), per_class, seed)
    real_images = torch.from_numpy(real.images).permute(0, 3, 1, 2).contiguous()
    found = judged(judge, real_images, real.labels, fake, fake_labels, classes, per_class)
    if train_images is not None and len(train_images):
        train = torch.from_numpy(train_images).permute(0, 3, 1, 2)
        found["memorisation"] = memorisation(fake, real_images, train, seed=seed)
    if second_judge is not None:
        found["judge"] = judged(second_judge, real_images, real.labels, fake, fake_labels,
                                classes, per_class)
    return found


def judged(judge: Judge, real: torch.Tensor, real_labels: np.ndarray, fake: torch.Tensor,
           fake_labels: torch.Tensor, classes: list[str], per_class: int) -> dict:
    """`image_metrics`' figures of generated images `fake` in one judge's features."""
    features, classifier = judge.features, judge.classifier
    real_features, fake_features = embed_images(features, real), embed_images(features, fake)
    found = {"n_real": len(real), "n_fake": len(fake),
             **feature_distances(real_features, fake_features),
             **precision_recall(real_features, fake_features), "per_class": {}}
    right = None
    if classifier is not None:
        right = recognised(classifier, fake, fake_labels)
        found["class_consistency"] = right.mean().item()
    dims = features.num_features
    for c, name in enumerate(classes):
        real_c = real_features[torch.from_numpy(real_labels == c)]
        fake_c = fake_features[fake_labels == c]
        found["per_class"][name] = {"n_real": len(real_c), "n_fake": len(fake_c)}
        if right is not None:
            found["per_class"][name]["class_consistency"] = right[fake_labels == c].mean().item()
        # A user's small test folder may hold 0 or 1 image of a class: no distance then.
        if len(real_c) >= 2:
            found["per_class"][name] |= feature_distances(real_c, fake_c)
        variety = beside_real(real_c, fake_c, seed=c)
        if variety:
            found["per_class"][name]["variety"] = variety
    per_class_fid = [v["fid"] for v in found["per_class"].values() if "fid" in v]
    if len(per_class_fid) == len(classes):
        # Class-aware: the images asked for a class against that class's real images. A
        # generator whose classes are mixed up draws realistic images that the class-blind FID
        # accepts; here they sit among the wrong class's images.
        found["class_fid"] = float(np.mean(per_class_fid))
    found |= variety_summary(found["per_class"])
    if min(per_class, len(real)) < 2 * dims:
        found["warning"] = (f"per-class FID uses {per_class} generated images against "
                            f"{dims}-dimensional features: below 2x the dimension, it is biased "
                            "upwards; compare it only at equal N")
    if right is None:
        found["class_consistency_skipped"] = "no classifier that took no part in training"
    else:
        found["worst_class_consistency"] = min(v["class_consistency"]
                                               for v in found["per_class"].values())
    return found
