"""Typed configuration: the one home of defaults.

A run's options are layered: these dataclass defaults (which are the ``quick`` preset), then a
preset from ``semigen/configs/<name>.yaml``, then a user's ``--config FILE.yaml``, then dotted
command-line overrides such as ``--label.lr 0.03``. ``validate`` refuses a bad config, naming the
field, before any data is read or any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

BUILTINS = ("digits", "fmnist", "mnist", "cifar10", "svhn")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
LABEL_MODES = ("semi", "labels-only", "all-labels")
# What generate.steps and generate.batch_size left at 0 become: each backend's quick budget,
# about 8.5 minutes of training on 2 CPU cores at 28 px (BENCHMARKS.md, module 2). The
# diffusion UNet costs about 5x the GAN per image, so it learns from smaller batches.
BACKEND_BUDGET = {"gan": {"steps": 4000, "batch_size": 128},
                  "diffusion": {"steps": 3400, "batch_size": 32}}
GENERATE_BACKENDS = tuple(BACKEND_BUDGET)  # generation/backends.py holds the modules
THRESHOLDS = ("adaptive", "fixed")
SEEKING_SPACES = ("pixels", "features")
DIFFUSION_FORMS = ("ddpm-v", "edm")  # generation/diffusion.py's FORMS
# What label.class_prior names: the shares distribution alignment and the thresholds aim at.
# A few labels per class cannot tell a real difference in how common the classes are from the
# features' leanings: an automatic rule (the estimate where the folds' labels said the pool
# differs, past a bootstrap bar) used the estimate on a balanced real collection it was not
# fitted to and cost five points there. So the estimate is shown (log, report, review page),
# and used only where the user asks: they know whether their collection is unequal.
CLASS_PRIORS = {
    "labeled": "the labeled images' shares (equal where every class has as many labels)",
    "estimate": "EM's estimate of the unlabeled images' shares (Saerens et al. 2002)",
    "uniform": "every class equally common (FreeMatch's assumption)",
}
FEATURE_CHOICES = ("auto", "self-supervised", "pretrained", "both")
LABELS_BY_CHOICES = ("auto", "spread", "linear")
PRETRAIN_LOSSES = ("nt-xent", "dcl")
NETS = ("cnn", "wrn10_2", "wrn28_2", "efficientnet-lite0", "efficientnet-lite1",
        "efficientnet-lite2")
CHANNELS = ("auto", "gray", "rgb")


class ConfigError(ValueError):
    """A config that cannot run; the message names the field or file."""


@dataclass
class DataConfig:
    source: str = "digits"  # a folder (DATA/labeled/<class>/..., DATA/unlabeled/...) or a built-in
    labels_csv: str | None = None  # path,label CSV, paths relative to `source` (or its folder)
    # path,label CSV of labels given after the split (unlabeled images labeled, labels
    # corrected); `semigen review` writes RUN/added_labels.csv, which continuing RUN reads itself
    added_labels: str | None = None
    allow_outside_paths: bool = False  # let CSV paths point outside `source` ('..', absolute)
    labels_per_class: int = 10  # built-ins: labeled images per class, the rest become unlabeled
    split_seed: int = 0  # built-ins: which images are labeled
    image_size: int | None = None  # square side; None: the most common size, scaled to max_side
    # the longest side when image_size is None: 64 suits a CPU (the networks then run at 32 px
    # behind a strided stem); the full preset (GPU) uses 128
    max_side: int = 64
    channels: str = "auto"  # auto: gray or RGB as the majority of the images is
    hflip: bool | None = None  # weak augmentation flips; None: per data set (off for digits)
    rotate: bool = False  # self-supervised views turn images by any angle (orientation no cue)
    cache_dir: str = "~/.cache/semigen"  # downloaded and extracted built-in data sets
    fmnist_dir: str = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
    download: bool = True  # built-ins other than digits: download when not found locally

    def problems(self, cfg: Config) -> list[str]:
        return failing(
            (0 <= self.split_seed < 2**32,
             f"data.split_seed must be between 0 and 2**32 - 1 (got {self.split_seed})"),
            (self.labels_per_class >= 1,
             f"data.labels_per_class must be >= 1 (got {self.labels_per_class})"),
            (self.image_size is None or 8 <= self.image_size <= 512,
             f"data.image_size must be between 8 and 512 (got {self.image_size})"),
            (8 <= self.max_side <= 512,
             f"data.max_side must be between 8 and 512 (got {self.max_side})"),
            (not _inside(cfg.run.out, self.source),
             f"run.out {cfg.run.out} lies inside the data folder {self.source}: the run's own "
             "files would be read as images; choose an --out outside it"),
            (self.channels in CHANNELS,
             f"data.channels must be one of {CHANNELS} (got {self.channels!r})"))


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    devices: int = 1  # processes; > 1 runs distributed data-parallel (torchrun works too)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (mixed precision through Lightning Fabric)
    seed: int = 0  # model init; each rank adds its rank to the data seed
    num_workers: int = 0  # DataLoader workers for the classifier's transforms (not the GAN's)
    threads: int = 0  # CPU threads (torch, OpenCV); 0: OMP_NUM_THREADS if set, else one per core

    def problems(self, cfg: Config) -> list[str]:
        return failing(
            (0 <= self.seed < 2**32,
             f"runtime.seed must be between 0 and 2**32 - 1 (got {self.seed})"),
            (self.device in DEVICES,
             f"runtime.device must be one of {DEVICES} (got {self.device!r})"),
            (self.devices >= 1, f"runtime.devices must be >= 1 (got {self.devices})"),
            (self.precision in PRECISIONS,
             f"runtime.precision must be one of {PRECISIONS} (got {self.precision!r})"),
            (self.num_workers >= 0,
             f"runtime.num_workers must be >= 0 (got {self.num_workers})"),
            (self.threads >= 0, f"runtime.threads must be >= 0 (got {self.threads})"))


@dataclass
class LabelConfig:
    mode: str = "semi"  # semi | labels-only (lower baseline) | all-labels (upper, built-ins only)
    # the classifier: cnn: small, for 8-32 px on a CPU | wrn28_2: WideResNet-28-2, for GPUs |
    # wrn10_2: a shallow WideResNet (what judges generated images when the classifier is a cnn)
    # | efficientnet-lite0 (-lite1, -lite2): ImageNet-pretrained, fine-tuned (Lite0's weights
    # come with semigen; label.weights: a file of it instead)
    net: str = "cnn"
    net_side: int = 0  # the side an efficientnet-lite net reads the images at; 0: 160 px
    backbone: str = ""  # instead of net: a torchvision architecture (resnet18) or timm:NAME
    weights: str = ""  # the backbone's pretrained weights: a state dict file, or 'download'
    steps: int = 1000  # fine-tuning after the representation stage (semi); baselines: the same
    batch_size: int = 32  # labeled images per step (FixMatch's 64 is in the full preset)
    lr: float = 0.03  # SGD with Nesterov momentum, cosine schedule (FixMatch)
    momentum: float = 0.9  # of the SGD optimizer
    weight_decay: float = 5e-4  # of the SGD optimizer
    ema_decay: float = 0.99  # EMA weights evaluate and pseudo-label (full preset: 0.999)
    uratio: int = 3  # unlabeled images per labeled image in a batch (FixMatch: 7)
    lambda_u: float = 1.0  # weight of the consistency loss
    thresholds: str = "adaptive"  # adaptive: FreeMatch's per-class levels | fixed: `threshold`
    threshold: float = 0.95  # the fixed confidence threshold (thresholds: fixed)
    threshold_momentum: float = 0.99  # how slowly the adaptive levels follow (full: 0.999)
    dist_align: bool = True  # align weak predictions to the class prior (ReMixMatch)
    # the class prior alignment and thresholds aim at (CLASS_PRIORS): labeled (the labeled
    # images' shares), estimate (EM's estimate of the unlabeled images' shares, for a
    # collection known to be unequal; always shown in the log, report and review) or uniform
    class_prior: str = "labeled"
    # semi: the features' labels stay a second teacher in fine-tuning (each unlabeled image's
    # target is the mean of the classifier's guess and its label from the features)
    second_teacher: bool = True
    eval_every: int = 250  # steps between test and pseudo-label figures in stats.jsonl
    # self-supervised representation stage (semi mode), before any label is used
    pretrain_steps: int = 2500  # SimCLR steps on every training image; 0: none
    pretrain_batch_size: int = 128  # images per step (two views each)
    pretrain_lr: float = 3e-3  # Adam
    pretrain_temperature: float = 0.2  # of the contrastive loss
    # nt-xent: SimCLR's loss | dcl: decoupled (the positive pair out of the denominator)
    pretrain_loss: str = "nt-xent"
    # frozen pretrained features, a candidate beside the self-supervised ones (semi mode):
    # auto (EfficientNet-Lite0, which comes with semigen, where installed; else none) | none |
    # efficientnet-lite0, -lite1, -lite2 | timm:NAME | torchvision:NAME
    pretrained: str = "auto"
    pretrained_weights: str = ""  # a state dict file for label.pretrained, not its default
    pretrained_size: int = 0  # the side it reads; 0: the files' own, within 64-224 px
    # the features the labels spread over: auto (the best held-out estimate of the candidates)
    # | self-supervised | pretrained | both (the two side by side)
    features: str = "auto"
    # how labels come from those features: auto (the best held-out estimate) | spread (label
    # spreading along the neighbour graph) | linear (a logistic probe on the labeled images)
    labels_by: str = "auto"
    width: int = 16  # channels of the cnn's first stage (it doubles twice)
    # honest confidence: each half of the labels held out in turn (semi, labels-only)
    calibration_steps: int = 250  # fine-tuning steps per half; 0: no estimate, temperature 1
    eval_unlabeled: int = 5000  # unlabeled images scored at each evaluation (all at the end)

    def problems(self, cfg: Config) -> list[str]:
        at_least = [(name, low) for names, low in (
            (("steps", "batch_size", "uratio", "eval_every"), 1),
            (("lambda_u", "eval_unlabeled", "calibration_steps", "pretrain_steps"), 0),
            (("pretrain_batch_size", "width"), 2)) for name in names]
        return failing(
            *((getattr(self, name) >= low,
               f"label.{name} must be >= {low} (got {getattr(self, name)})")
              for name, low in at_least),
            *((getattr(self, name) > 0, f"label.{name} must be > 0 (got {getattr(self, name)})")
              for name in ("lr", "pretrain_lr", "pretrain_temperature")),
            *((value <= MAX_LR, f"label.{name} must be at most {MAX_LR} (got {value})")
              for name, value in (("lr", self.lr), ("pretrain_lr", self.pretrain_lr))),
            (self.mode in LABEL_MODES,
             f"label.mode must be one of {LABEL_MODES} (got {self.mode!r})"),
            (self.net in NETS, f"label.net must be one of {NETS} (got {self.net!r})"),
            (0 <= self.ema_decay < 1,
             f"label.ema_decay must be in [0, 1) (got {self.ema_decay})"),
            (self.pretrain_loss in PRETRAIN_LOSSES,
             f"label.pretrain_loss must be one of {PRETRAIN_LOSSES} (got {self.pretrain_loss!r})"),
            (self.features in FEATURE_CHOICES,
             f"label.features must be one of {FEATURE_CHOICES} (got {self.features!r})"),
            (self.labels_by in LABELS_BY_CHOICES,
             f"label.labels_by must be one of {LABELS_BY_CHOICES} (got {self.labels_by!r})"),
            (self.features in ("auto", "self-supervised") or self.pretrained != "none",
             f"label.features {self.features} needs a pretrained network (label.pretrained is "
             "none)"),
            (self.net_side == 0 or 32 <= self.net_side <= 1024,
             f"label.net_side must be 0 or 32-1024 (got {self.net_side})"),
            (self.pretrained_size == 0 or 16 <= self.pretrained_size <= 1024,
             f"label.pretrained_size must be 0 or 16-1024 (got {self.pretrained_size})"),
            (self.class_prior in CLASS_PRIORS,
             f"label.class_prior must be one of {tuple(CLASS_PRIORS)} (got "
             f"{self.class_prior!r})"),
            (self.thresholds in THRESHOLDS,
             f"label.thresholds must be one of {THRESHOLDS} (got {self.thresholds!r})"),
            (0 < self.threshold <= 1,
             f"label.threshold must be in (0, 1] (got {self.threshold})"),
            (0 <= self.threshold_momentum < 1,
             f"label.threshold_momentum must be in [0, 1) (got {self.threshold_momentum})"),
            (self.mode != "all-labels" or cfg.data.source in BUILTINS,
             "label.mode all-labels needs a built-in data set, whose held-out labels are known "
             f"(data.source is {cfg.data.source!r})"))


@dataclass
class GenerateConfig:
    # gan: a conditional GAN (fast on a CPU) | diffusion: a class-conditional UNet (diffusers)
    backend: str = "gan"
    mode: str = "semi"  # semi: real + confident pseudo-labels | labels-only | all-labels
    min_confidence: float = 0.9  # pseudo-labels at or above this train the generator
    # and in each class at least this share of the images given it, the most confident first
    # (a bar alone starves the classes the classifier is least sure of); a rule, not chosen on
    # any figure: half of what the classifier gives a class (on digits at 10 labels per class
    # the bar passes nearly all of them, so 0.25 and 0.75 train the same generator)
    class_floor: float = 0.5
    weight_by_confidence: bool = False  # sample pseudo-labeled images in proportion to it
    steps: int = 0  # 0: the backend's quick budget (gan 4000, diffusion 3400) x budget
    # where steps is 0: how many times the backend's quick budget it trains for; the GAN's
    # variety grows about 0.1 of real per doubling on Fashion-MNIST (BENCHMARKS.md, "Variety
    # against training time")
    budget: float = 1.0
    batch_size: int = 0  # 0: the backend's (gan 128, diffusion 32); the full preset (GPU): 64
    z_dim: int = 128  # gan: length of the noise vector the generator starts from
    width: int = 16  # channels scale: generator 4x at the start halving to 1x, discriminator 1x-4x
    lr: float = 4e-4  # Adam, both networks, betas (0, 0.999); 2e-4 learns the classes slower
    ema_decay: float = 0.999  # the EMA generator samples
    diff_augment: bool = True  # DiffAugment on real and fake images, in both steps
    # weight of an auxiliary class loss (AC-GAN): the discriminator also classifies real images,
    # the generator is pushed to make images it recognises as their class; 0: projection alone.
    # At 1 it drew one image per class (a tenth of real images' variety); 0.1 keeps the classes
    # recognisable and lets them vary. Chosen on digits split seeds 3-5, neither reported nor
    # the demo's, by the judge's label-free figures (variety, class consistency: 0.3 varies
    # less, 0.03 is less recognisable; docs/defaults.md); never on test accuracy or unlabeled
    # truth
    class_loss: float = 0.1
    # gan: weight of the mode-seeking term (MSGAN): two images of a class drawn from different
    # noise must differ; 0: none (half the variety). 0.15 varies more and is recognised less
    # (chosen with class_loss, as above)
    mode_seeking: float = 0.05
    # gan: where the mode-seeking term measures how far apart two images are: "pixels", or
    # "features", the discriminator's (meant to reward other shapes over other brightness;
    # on Fashion-MNIST at the quick budget it bought no variety: docs/defaults.md)
    seeking_space: str = "pixels"
    # gan: the discriminator also sees how much the images of a class in the batch differ
    # (minibatch standard deviation per class, ProGAN's); off: on Fashion-MNIST at the quick
    # budget it bought no variety and cost consistency (docs/defaults.md)
    minibatch_std: bool = False
    # diffusion only: classifier-free guidance w at sampling, (1 + w) * conditional - w *
    # unconditional (0: the conditional model alone); it can be changed when sampling. 0.5:
    # the judge's label-free figures on digits split seeds 3-5 (variety 0.80 against 0.68 at
    # 1, class consistency 0.991 against 0.998; docs/defaults.md)
    guidance: float = 0.5
    label_dropout: float = 0.1  # diffusion: share of training images whose class is hidden
    # diffusion: how it is trained and sampled: "ddpm-v" (DDPM, v-prediction, cosine schedule)
    # or "edm" (Karras et al. 2022: log-normal noise levels, preconditioned inputs and target;
    # on Fashion-MNIST as varied and less recognisable: docs/defaults.md)
    diffusion_form: str = "ddpm-v"
    sample_steps: int = 20  # diffusion: DPM-Solver++ steps per image
    sample_every: int = 500  # per-class grids in RUN/samples/
    grid_per_class: int = 8  # images per class in each grid

    def problems(self, cfg: Config) -> list[str]:
        return failing(
            (self.backend in GENERATE_BACKENDS,
             f"generate.backend must be one of {GENERATE_BACKENDS} (got {self.backend!r})"),
            (self.mode in LABEL_MODES,
             f"generate.mode must be one of {LABEL_MODES} (got {self.mode!r})"),
            (0 <= self.min_confidence <= 1,
             f"generate.min_confidence must be in [0, 1] (got {self.min_confidence})"),
            (0 <= self.class_floor <= 1,
             f"generate.class_floor must be in [0, 1] (got {self.class_floor})"),
            *((getattr(self, name) >= 1,
               f"generate.{name} must be >= 1 (got {getattr(self, name)})")
              for name in ("steps", "batch_size", "z_dim", "width", "sample_every",
                           "grid_per_class", "sample_steps")),
            (self.lr > 0, f"generate.lr must be > 0 (got {self.lr})"),
            (self.budget > 0, f"generate.budget must be > 0 (got {self.budget})"),
            (self.lr <= MAX_LR, f"generate.lr must be at most {MAX_LR} (got {self.lr})"),
            (self.class_loss >= 0,
             f"generate.class_loss must be >= 0 (got {self.class_loss})"),
            (self.mode_seeking >= 0,
             f"generate.mode_seeking must be >= 0 (got {self.mode_seeking})"),
            (self.diffusion_form in DIFFUSION_FORMS,
             f"generate.diffusion_form must be one of {DIFFUSION_FORMS} (got "
             f"{self.diffusion_form!r})"),
            (self.seeking_space in SEEKING_SPACES,
             f"generate.seeking_space must be one of {SEEKING_SPACES} (got "
             f"{self.seeking_space!r})"),
            (0 <= self.ema_decay < 1,
             f"generate.ema_decay must be in [0, 1) (got {self.ema_decay})"),
            (self.guidance >= 0, f"generate.guidance must be >= 0 (got {self.guidance})"),
            (0 <= self.label_dropout < 1,
             f"generate.label_dropout must be in [0, 1) (got {self.label_dropout})"),
            (self.backend != "diffusion" or self.guidance == 0 or self.label_dropout > 0,
             f"generate.guidance {self.guidance} needs generate.label_dropout > 0: guidance "
             "uses the unconditional model, which is learnt from images whose class is hidden"),
            (self.sample_steps <= 1000,
             f"generate.sample_steps must be <= 1000, the training schedule's steps "
             f"(got {self.sample_steps})"),
            (self.mode != "all-labels" or cfg.data.source in BUILTINS,
             "generate.mode all-labels needs a built-in data set, whose held-out labels are "
             f"known (data.source is {cfg.data.source!r})"))


@dataclass
class FitConfig:
    # joint rounds after label and generate; 0 stops after them; -1: one where a class has at
    # most `joint.ROUNDS_PAY_UP_TO` labeled images (where rounds were measured to pay), else 0
    rounds: int = -1
    synthetic_per_class: int = 128  # generated images per class a round gives the classifier
    synthetic_ratio: float = 0.5  # generated per real labeled image in a batch; 0: none (control)
    synthetic_weight: float = 1.0  # weight of the generated images' own loss term in fine-tuning
    # the round's generated images are also labeled points among the representation's
    # features, and the features' labels (fine-tuning's second teacher) are spread again
    feature_step: bool = True
    # score candidate image sets (guidance; diffusion: variations of the labeled images) by
    # what they teach (CAS on the labeled images) and keep the best; false: the backend's
    # samples at its own settings
    choose_images: bool = True
    # diffusion: instead of samples, variations of the true labeled images noised this far
    # (0.3-0.7) and denoised towards their class (SDEdit); 0: samples
    variation_strength: float = 0.0
    # give no generated images of classes the labeled images contradict (a probe trained on
    # the generated images gives a labeled image of one of them another of them)
    drop_contradicted: bool = True
    # keep a generated image only if the last classifier gives it its class at this confidence
    # (0: keep all); 4x as many are generated to choose from
    synthetic_min_confidence: float = 0.0
    label_steps: int = 500  # classifier fine-tuning steps per round
    label_lr: float = 0.006  # where round 0's cosine schedule ended (0.2 x label.lr)
    generate_steps: int = 1000  # generator refinement steps per round
    baselines: bool = True  # also train labels-only (and all-labels, built-ins) classifiers

    def problems(self, cfg: Config) -> list[str]:
        return failing(
            *((getattr(self, name) >= 1, f"fit.{name} must be >= 1 (got {getattr(self, name)})")
              for name in ("synthetic_per_class", "label_steps", "generate_steps")),
            (self.rounds >= -1,
             f"fit.rounds must be >= 0, or -1 for auto (got {self.rounds})"),
            (0 <= self.synthetic_ratio <= MAX_SYNTHETIC_RATIO,
             f"fit.synthetic_ratio must be in [0, {MAX_SYNTHETIC_RATIO}] "
             f"(got {self.synthetic_ratio})"),
            (self.label_lr > 0, f"fit.label_lr must be > 0 (got {self.label_lr})"),
            (self.label_lr <= MAX_LR,
             f"fit.label_lr must be at most {MAX_LR} (got {self.label_lr})"),
            (0 <= self.variation_strength < 1,
             f"fit.variation_strength must be in [0, 1) (got {self.variation_strength})"),
            (self.variation_strength == 0 or cfg.generate.backend == "diffusion",
             "fit.variation_strength needs generate.backend diffusion (a GAN cannot vary a "
             f"real image; the backend is {cfg.generate.backend!r})"),
            (self.synthetic_weight >= 0,
             f"fit.synthetic_weight must be >= 0 (got {self.synthetic_weight})"),
            (0 <= self.synthetic_min_confidence < 1,
             "fit.synthetic_min_confidence must be in [0, 1) "
             f"(got {self.synthetic_min_confidence})"))


@dataclass
class EvaluateConfig:
    per_class: int = 1000  # generated images per class for the final FID, KID, consistency
    round_per_class: int = 200  # the same for each joint round's figures in `fit`
    evaluator_steps: int = 3000  # training budget of the built-in evaluator network
    seed: int = 0  # seed of the generated images that are scored
    # FID/KID features: a torchvision Inception-v3 state dict, or "download" (needs a network);
    # None: the built-in data set's evaluator network (user folders get no image metrics)
    inception_weights: str | None = None
    # the judge of a user's own images: self-supervised features trained on the training
    # images for this many steps (cached per data set; 0: none); on built-ins beside the
    # evaluator, as a check of it
    judge_steps: int = 1000
    features: str | None = None  # your weights for the judge's features instead (a state dict)
    features_net: str = "resnet50"  # their architecture: torchvision or timm:NAME (DINOv2: timm)

    def problems(self, cfg: Config) -> list[str]:
        weights = self.inception_weights
        return failing(
            (0 <= self.seed < 2**32,
             f"evaluate.seed must be between 0 and 2**32 - 1 (got {self.seed})"),
            *((getattr(self, name) >= 1,
               f"evaluate.{name} must be >= 1 (got {getattr(self, name)})")
              for name in ("per_class", "round_per_class", "evaluator_steps")),
            *((getattr(self, name) <= MAX_PER_CLASS,
               f"evaluate.{name} must be <= {MAX_PER_CLASS:,}, as in every command (got "
               f"{getattr(self, name)})") for name in ("per_class", "round_per_class")),
            (self.judge_steps >= 0,
             f"evaluate.judge_steps must be >= 0 (got {self.judge_steps})"),
            (self.features is None or Path(self.features).expanduser().is_file(),
             f"evaluate.features: {self.features}: no such file (a state dict of "
             f"evaluate.features_net, {self.features_net})"),
            (weights in (None, "download") or Path(weights).expanduser().is_file(),
             f"evaluate.inception_weights: {weights}: no such file (a torchvision Inception-v3 "
             "state dict, or download)"))


@dataclass
class RunConfig:
    out: str = "runs/default"  # the run directory every file of the run goes to
    resume: str = "auto"  # auto: continue from out/checkpoints/latest.pt if present | none | PATH
    log_every: int = 10  # steps between loss lines in stats.jsonl
    checkpoint_every: int = 500  # steps between checkpoints (and at the end of a stage)
    keep_last: int = 3  # step checkpoints kept beside latest.pt and best.pt; 0 keeps none
    progress: bool = True  # progress bars (rank 0 only)

    def problems(self, cfg: Config) -> list[str]:
        return failing(*((getattr(self, name) >= low,
                          f"run.{name} must be >= {low} (got {getattr(self, name)})")
                         for name, low in (("checkpoint_every", 1), ("log_every", 1),
                                           ("keep_last", 0))))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def presets() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in _preset_dir().iterdir()
                  if p.name.endswith(".yaml"))


def _preset_dir():
    return resources.files("semigen") / "configs"


def load_yaml(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, label:, ...)")
    return data


def load_run_yaml(path: str | Path) -> dict:
    """A run's config.yaml: every section semigen wrote; an empty or cut one is refused."""
    values = load_yaml(path)
    if not isinstance(values.get("data"), dict) or not isinstance(values.get("run"), dict):
        raise ConfigError(f"{path}: empty or damaged (a run's config.yaml holds its whole "
                          "config); restore it from a copy, or start a new run with another "
                          "--out")
    return values


def load_run_config(path: str | Path) -> Config:
    return from_dict(load_run_yaml(path))


def merge(cfg: Config, values: dict, origin: str) -> Config:
    """Apply nested ``{section: {key: value}}`` values; unknown keys are errors naming `origin`."""
    for section, entries in values.items():
        if not hasattr(cfg, section) or section.startswith("_"):
            raise ConfigError(f"{origin}: unknown section '{section}' "
                              f"(sections: {', '.join(f.name for f in dataclasses.fields(cfg))})")
        if not isinstance(entries, dict):
            raise ConfigError(f"{origin}: section '{section}' must be a mapping")
        for key, value in entries.items():
            set_value(cfg, f"{section}.{key}", value, origin)
    return cfg


def set_value(cfg: Config, dotted: str, value, origin: str = "command line") -> None:
    """Set ``section.key`` to `value`, coerced to the field's type (strings come from the CLI)."""
    section_name, _, key = dotted.replace("-", "_").partition(".")
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not key:
        raise ConfigError(f"{origin}: unknown option '{dotted}'")
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise ConfigError(f"{origin}: unknown option '{dotted}' (in {section_name}: {known})")
    setattr(section, key, _coerce(value, hints[key], f"{origin}: {section_name}.{key}"))


def _coerce(value, hint, where: str):
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty")
    if isinstance(value, (list, dict, tuple, set)):
        raise ConfigError(f"{where} expects one {base.__name__}, got a "
                          f"{'list' if isinstance(value, (list, tuple, set)) else 'mapping'}: "
                          f"{shortened(value)}")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(f"{where} expects {base.__name__}, got {shortened(value)}") from None


def shortened(value, limit: int = 60) -> str:
    """A value as a message quotes it: its repr, cut at `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def resolve(preset: str | None = None, config_file: str | None = None,
            overrides: dict | None = None, base_file: str | Config | None = None) -> Config:
    """Defaults, then `base_file` (a run's saved config.yaml, or a Config), then the preset,
    then a YAML file, then ``{"section.key": value}`` overrides."""
    cfg = Config()
    if isinstance(base_file, Config):
        merge(cfg, base_file.to_dict(), "base config")
    elif base_file:
        merge(cfg, load_run_yaml(base_file), str(base_file))
    if preset:
        if preset not in presets():
            raise ConfigError(f"unknown preset '{preset}' (presets: {', '.join(presets())})")
        with resources.as_file(_preset_dir() / f"{preset}.yaml") as path:
            merge(cfg, load_yaml(path), f"preset {preset}")
    if config_file:
        merge(cfg, load_yaml(config_file), str(config_file))
    for dotted, value in (overrides or {}).items():
        set_value(cfg, dotted, value)
    return with_backend_budget(cfg)


# The command line's flags, and the API's keywords without a section, as config fields.
FLAG_FIELDS = {"data": "data.source", "labels": "data.labels_csv",
               "added_labels": "data.added_labels",
               "labels_per_class": "data.labels_per_class", "split_seed": "data.split_seed",
               "image_size": "data.image_size", "out": "run.out", "seed": "runtime.seed",
               "device": "runtime.device", "devices": "runtime.devices",
               "precision": "runtime.precision", "resume": "run.resume", "rounds": "fit.rounds"}


# The fields that name a file or folder of the user's: a run stores them absolute.
PATH_FIELDS = ("data.source", "data.labels_csv", "data.added_labels", "label.weights",
               "label.pretrained_weights", "evaluate.inception_weights", "evaluate.features")


def make_config(data: str | None = None, out: str | None = None, preset: str | None = None,
                config: str | Path | None = None, base: str | Path | Config | None = None,
                **fields) -> Config:
    """The one way a run's config is assembled (command line, Python API, the evaluator's
    recipe, the baselines): defaults, then `base` (a run's saved config.yaml, or the Config of
    the run a part belongs to), the `preset`, the YAML file `config`, `data` and `out`, then
    `fields`: ``section__field`` or ``section.field`` keywords, or the command line's flags
    (`FLAG_FIELDS`). Validated: a bad config is refused here, naming every bad field."""
    overrides = {"data.source": data, "run.out": out}
    for key, value in fields.items():
        if "." in key or "__" in key:
            overrides[key.replace("__", ".")] = value
        elif key in FLAG_FIELDS:
            overrides[FLAG_FIELDS[key]] = value
        else:
            raise ConfigError(f"unknown option {key!r}: use section__field, e.g. label__lr")
    cfg = resolve(preset, str(config) if config else None,
                  {k: v if isinstance(v, str) else str(v) for k, v in overrides.items()
                   if v is not None},
                  base_file=base if isinstance(base, Config) or not base else str(base))
    # A built-in's name in a run's saved config is the built-in: its folders were saved as
    # full paths, so a folder named "digits" where the command runs is not the run's data.
    saved_builtin = overrides["data.source"] is None and cfg.data.source in BUILTINS
    for dotted in PATH_FIELDS:  # kept absolute: the run is found from any working directory
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if dotted == "data.source" and saved_builtin:
            continue
        if value and Path(value).expanduser().exists():
            setattr(getattr(cfg, section), name, str(Path(value).expanduser().resolve()))
    if cfg.data.cache_dir and not cfg.data.cache_dir.startswith("~"):  # made where it began
        cfg.data.cache_dir = str(Path(cfg.data.cache_dir).resolve())
    validate(cfg)
    return cfg


def with_backend_budget(cfg: Config) -> Config:
    """`cfg` with generate.steps and generate.batch_size that are 0 set to its backend's,
    the steps times generate.budget (an unknown backend is left for `validate` to name)."""
    gen = cfg.generate
    for name, value in BACKEND_BUDGET.get(gen.backend, {}).items():
        if getattr(gen, name) == 0:
            scale = gen.budget if name == "steps" and gen.budget > 0 else 1
            setattr(gen, name, max(1, round(value * scale)))
    return cfg


MAX_LR = 10.0
MAX_PER_CLASS = 1_000_000  # generated images per class one command makes, in every command
MAX_SYNTHETIC_RATIO = 64  # generated images per real labeled image in a round's batches


def validate(cfg: Config) -> None:
    """Refuse a config that cannot run, before any data is read; every problem is listed, each
    section naming its own."""
    problems = [problem for section in dataclasses.fields(cfg)
                for problem in numbers_problems(section.name, getattr(cfg, section.name))]
    for section in dataclasses.fields(cfg):
        problems += getattr(cfg, section.name).problems(cfg)
    if problems:
        raise ConfigError("bad config:\n  " + "\n  ".join(problems))


def numbers_problems(name: str, section) -> list[str]:
    """inf or nan where a number goes trains nothing; an integer this large is no step count,
    size or seed."""
    return failing(*((not isinstance(value, float) or math.isfinite(value),
                      f"{name}.{f.name} must be a finite number (got {value})")
                     for f in dataclasses.fields(section)
                     if isinstance(value := getattr(section, f.name), float)),
                   *((abs(value) < 2**32, f"{name}.{f.name} is too large (got {shortened(value)})")
                     for f in dataclasses.fields(section)
                     if isinstance(value := getattr(section, f.name), int)))


def failing(*checks: tuple[bool, str]) -> list[str]:
    """The messages of the checks that fail."""
    return [message for ok, message in checks if not ok]


def _inside(path: str | None, folder: str | None) -> bool:
    """Whether `path` is `folder` or lies inside it (a folder that exists; not a built-in)."""
    if not path or not folder or not Path(folder).expanduser().is_dir():
        return False
    return Path(path).expanduser().resolve().is_relative_to(Path(folder).expanduser().resolve())


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``section.key: old -> new`` for every value that differs between two ``to_dict``s."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def from_dict(values: dict) -> Config:
    """Rebuild a Config from ``to_dict`` output (a checkpoint's or a run's config.yaml)."""
    return merge(Config(), values, "saved config")
