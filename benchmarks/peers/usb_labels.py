"""USB (semilearn 0.3.2: FreeMatch, FixMatch) on the very split of a semigen run, for a given
wall time on this machine, with test accuracy against minutes. Runs in the peers' venv
(`benchmarks/peers/setup.sh`):

    benchmarks/peers/.venv/bin/python benchmarks/peers/usb_labels.py RUN \\
        --algorithm freematch --minutes 20 --threads 1 --out benchmarks/results/peers/x

RUN is a semigen run directory: its config.yaml names the data, its split.json the labeled
images (checked image by image against what the data gives). The rest of the training pool is
USB's unlabeled set (labeled images included, USB's default `include_lb_to_ulb`); the test
images are semigen's.

USB's own recipe for CIFAR-10 with 40 labels (config/classic_cv/<algorithm>/
<algorithm>_cifar10_40_0.yaml) is used as it stands: SGD 0.03, Nesterov momentum 0.9, weight
decay 5e-4, batch 64 labeled + 7x64 unlabeled, EMA 0.999, T 0.5, hard labels, FixMatch's
0.95 cutoff, FreeMatch's EMA 0.999 and entropy weight 0.001, its weak (reflect-padded crop,
flip where the data allow it) and strong (RandAugment(3, 5)) views. Two things follow from
the time: the cosine schedule spans the steps that fit in the minutes (at the pace of the
first 20, then 200 steps), and the network is a choice (`--net`): semigen's cnn of the run (the same
network semigen trains, so that the comparison is of methods, not of networks) or USB's
WRN-28-2. USB's Trainer is CUDA-only; this script drives USB's algorithm object step by step
on the CPU instead (its `train_step`, then its parameter update and EMA hooks), evaluating the
EMA model on the test images every `--eval-minutes` (time not counted)."""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn


class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """USB imports its audio and text stacks (torchaudio, transformers) and two experiment
    trackers (wandb, aim) when its package loads; its image algorithms never call them, and
    torchaudio is built for one torch version. Empty modules stand in for them."""

    NAMES = ("torchaudio", "transformers", "wandb", "aim")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.NAMES:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: type(attr, (), {})  # any name: a dummy class
        return module

    def exec_module(self, module):
        pass


def usb_args(algorithm: str, num_classes: int, steps: int) -> argparse.Namespace:
    """USB's CIFAR-10 40-label recipe for `algorithm`, as the attributes its classes read."""
    common = dict(algorithm=algorithm, num_classes=num_classes, epoch=1, num_train_iter=steps,
                  num_eval_iter=10**9, num_log_iter=10**9, num_warmup_iter=0,
                  batch_size=64, uratio=7, eval_batch_size=256, ema_m=0.999, optim="SGD",
                  lr=0.03, momentum=0.9, weight_decay=5e-4, layer_decay=1.0, amp=False,
                  clip_grad=0.0, use_cat=True, ulb_loss_ratio=1.0, T=0.5, hard_label=True,
                  save_name=algorithm, save_dir="/nonexistent", resume=False, gpu=None, rank=0,
                  distributed=False, world_size=1, dataset="semigen", num_labels=0,
                  data_dir="", include_lb_to_ulb=True, use_pretrain=False, pretrain_path="",
                  use_wandb=False, use_aim=False)
    own = {"fixmatch": dict(p_cutoff=0.95),
           "freematch": dict(ema_p=0.999, ent_loss_ratio=0.001, use_quantile=False,
                             clip_thresh=False)}
    return argparse.Namespace(**common, **own[algorithm])


class LogitsAndFeatures(nn.Module):
    """semigen's classifier as USB's algorithms call a network: {'logits', 'feat'}."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, only_fc=False, only_feat=False, **_):
        if only_fc:
            return self.net.head(x)
        feat = self.net.features(x)
        return feat if only_feat else {"logits": self.net.head(feat), "feat": feat}


def net_builder(choice: str, shape: tuple[int, int, int], num_classes: int, width: int):
    """USB's `net_builder(num_classes, pretrained, pretrained_path)` for `choice`."""
    def build(num_classes=num_classes, **_):
        if choice == "wrn_28_2":
            from semilearn.nets import wrn_28_2
            return wrn_28_2(num_classes=num_classes)
        from semigen.labeling import nets
        return LogitsAndFeatures(nets.build(**nets.arguments("cnn", shape, num_classes, width)))
    return build


def usb_views(shape: tuple[int, int, int], hflip: bool):
    """USB's weak and strong views (its CIFAR pipeline), normalised to [-1, 1] as semigen's
    networks expect, for N x H x W x C uint8 images made PIL images."""
    from semilearn.datasets.augmentation import RandAugment
    from torchvision import transforms as T
    h, c = shape[0], shape[2]
    crop = [T.RandomCrop(h, padding=int(h * 0.125), padding_mode="reflect")]
    flip = [T.RandomHorizontalFlip()] if hflip else []
    # USB's RandAugment draws its cutout in RGB: grey images go through it as RGB and back.
    grey = [T.Grayscale(1)] if c == 1 else []
    finish = grey + [T.ToTensor(), T.Normalize([0.5] * c, [0.5] * c)]
    weak = T.Compose(flip + crop + finish)
    strong = T.Compose(flip + crop + [RandAugment(3, 5)] + finish)
    return weak, strong


def as_pil_ready(images: np.ndarray) -> np.ndarray:
    """N x H x W x C uint8 as USB's datasets make PIL images of them: RGB (grey repeated)."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def loaders(data, labeled_idx, unlabeled_images, args, shape, hflip, seed, workers):
    from semilearn.datasets.cv_datasets.datasetbase import BasicDataset
    from torch.utils.data import DataLoader, RandomSampler
    weak, strong = usb_views(shape, hflip)
    lb = BasicDataset(args.algorithm, as_pil_ready(data.labeled.images[labeled_idx]),
                      data.labeled.labels[labeled_idx], args.num_classes, weak, False, None)
    ulb = BasicDataset(args.algorithm, as_pil_ready(unlabeled_images), None, args.num_classes,
                       weak, True, strong)
    g = torch.Generator().manual_seed(seed)

    def endless(dataset, batch):
        sampler = RandomSampler(dataset, replacement=True, num_samples=10**9, generator=g)
        return iter(DataLoader(dataset, batch, sampler=sampler, num_workers=workers,
                               drop_last=True, persistent_workers=workers > 0))
    return endless(lb, args.batch_size), endless(ulb, args.batch_size * args.uratio)


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    predicted = torch.cat([model(x[i:i + 1000])["logits"].argmax(1)
                           for i in range(0, len(x), 1000)])
    model.train()
    return (predicted.numpy() == labels).mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a semigen run directory (config.yaml, split.json)")
    p.add_argument("--algorithm", choices=("freematch", "fixmatch"), default="freematch")
    p.add_argument("--minutes", type=float, required=True, help="training wall time")
    p.add_argument("--net", choices=("cnn", "wrn_28_2"), default="cnn")
    p.add_argument("--eval-minutes", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema-warmup", action="store_true",
                   help="the EMA's decay min(0.999, (1+t)/(10+t)) at step t (Mean Teacher's, as "
                        "semigen's): fitted to a short budget; USB's recipe has none")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    sys.meta_path.insert(0, _Absent())
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    # USB sends every batch and statistic to the GPU with `.cuda(gpu)`; here they stay put.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    from semilearn.algorithms import get_algorithm
    from semilearn.core.hooks import EMAHook, ParamUpdateHook
    from semilearn.core.utils import get_cosine_schedule_with_warmup

    from semigen.config import resolve
    from semigen.data import load_dataset
    from semigen.training import ema_decay_at

    cfg = resolve(base_file=str(a.run / "config.yaml"))
    data = load_dataset(cfg.data)
    split = json.loads((a.run / "split.json").read_text())
    if list(data.labeled.ids) != split["labeled"]:
        sys.exit(f"{a.run}/split.json: the data now gives another labeled set; not comparable")
    labeled_idx = np.arange(len(data.labeled.ids))
    pool = np.concatenate([data.labeled.images, data.unlabeled.images])
    shape = data.labeled.images.shape[1:]
    num_classes = len(data.classes)
    args = usb_args(a.algorithm, num_classes, steps=10**6)
    build = net_builder(a.net, shape, num_classes, cfg.label.width)
    alg = get_algorithm(args, build, tb_log=None, logger=None)
    lb, ulb = loaders(data, labeled_idx, pool, args, shape, data.hflip, a.seed, a.workers)
    update, ema = ParamUpdateHook(), EMAHook()
    ema.before_run(alg)
    alg.model.train()

    def step():
        batch = {**next(lb), **next(ulb)}
        alg.out_dict, alg.log_dict = alg.train_step(**alg.process_batch(**batch))
        update.after_train_step(alg)
        if a.ema_warmup:
            alg.ema.decay = ema_decay_at(alg.it, args.ema_m)
        ema.after_train_step(alg)
        alg.it += 1

    curve, trained, next_eval = [], 0.0, 0.0

    def fit_schedule():
        """USB's cosine schedule over the steps that fit in the minutes, at the pace so far."""
        total = max(alg.it + 1, int(a.minutes * 60 * alg.it / trained))
        alg.scheduler = get_cosine_schedule_with_warmup(alg.optimizer, total, 0)
        for _ in range(alg.it):
            alg.scheduler.step()
        return total

    total = 10**6

    def evaluate():
        # USB evaluates its EMA weights (decay 0.999, no warm-up: after 600 steps they still
        # hold 55 % of the initial ones); the raw weights are measured beside them, so that
        # the figure of a short run is not the EMA's lag.
        found = {"minutes": round(trained / 60, 2), "step": alg.it,
                 "test_accuracy_raw": accuracy(alg.model, data.test.images, data.test.labels)}
        alg.ema.apply_shadow()
        found["test_accuracy"] = accuracy(alg.model, data.test.images, data.test.labels)
        alg.ema.restore()
        curve.append(found)
        print(json.dumps(found), flush=True)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "curve.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))

    while alg.it < total and trained < a.minutes * 60:
        if trained >= next_eval:
            evaluate()
            next_eval += a.eval_minutes * 60
        begun = time.time()
        step()
        trained += time.time() - begun
        if alg.it in (20, 200):  # the pace, measured twice: the first steps are slower
            total = fit_schedule()
    evaluate()
    result = {"peer": f"USB {a.algorithm} (semilearn 0.3.2)", "net": a.net, "run": str(a.run),
              "ema_warmup": a.ema_warmup,
              # a folder's split has neither: its labels are the user's
              "labels_per_class": split.get("labels_per_class",
                                            len(split["labeled"]) // num_classes),
              "split_seed": split.get("split_seed"),
              "minutes": a.minutes, "threads": a.threads, "steps": alg.it,
              "seconds_per_step": round(trained / max(1, alg.it), 3),
              "test_accuracy": curve[-1]["test_accuracy"],
              "test_accuracy_raw": curve[-1]["test_accuracy_raw"], "curve": curve,
              "recipe": {k: v for k, v in vars(args).items()
                         if k in ("batch_size", "uratio", "lr", "momentum", "weight_decay",
                                  "ema_m", "T", "p_cutoff", "ema_p", "ent_loss_ratio")}}
    if data.unlabeled_truth is not None:
        result["pseudo_label_accuracy_raw"] = accuracy(alg.model, data.unlabeled.images,
                                                       data.unlabeled_truth)
        alg.ema.apply_shadow()
        result["pseudo_label_accuracy"] = accuracy(alg.model, data.unlabeled.images,
                                                   data.unlabeled_truth)
    (a.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))


if __name__ == "__main__":
    main()
