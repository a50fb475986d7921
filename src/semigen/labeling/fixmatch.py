"""The fine-tuning step of the label stage: FixMatch (Sohn et al. 2020) with FreeMatch's
self-adaptive thresholds and distribution alignment, on the features' labels as a second
teacher. `step_loss` is one step's loss, read top to bottom; the main fine-tuning
(`train.py`) and each half of the cross-fitting (`calibrate.py`) run it."""

from __future__ import annotations

import math

import torch

from ..data.transforms import seeded_cpu_rng
from ..training import make_ema
from . import losses


def cosine_lr(total_steps: int):
    """FixMatch's schedule: lr * cos(7 pi t / 16 T), which ends at about 0.2 lr."""
    return lambda step: math.cos(7 * math.pi * step / (16 * total_steps))


def fine_tuning(net: torch.nn.Module, lab, lr: float, total_steps: int):
    """The EMA of `net`, its optimiser and its schedule, for one fine-tuning loop (the main one
    or a calibration half)."""
    ema = make_ema(net, lab.ema_decay)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=lab.momentum,
                                weight_decay=lab.weight_decay, nesterov=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr(total_steps))
    return ema, optimizer, schedule


def initial_levels(num_classes: int, class_prior: torch.Tensor | None = None) -> dict:
    """FreeMatch's confidence levels before any batch: global, and the mean prediction per
    class, at chance and at the class prior; and the class prior (uniform where none is
    given), which distribution alignment aims at and the thresholds are measured against."""
    if class_prior is None:
        class_prior = torch.full((num_classes,), 1.0 / num_classes)
    return {"global": torch.tensor(1.0 / num_classes), "per_class": class_prior.clone(),
            "prior": class_prior.clone()}


def step_loss(model, lab, rt, batches: dict, teacher: torch.Tensor | None, levels: dict,
              nuisances=None, nuisance_seed: int = 0, generated_weight: float = 1.0
              ) -> tuple[torch.Tensor, dict, dict]:
    """One training step's loss from the next batches: the labeled cross-entropy, in a joint
    round the generated images' cross-entropy as a term of its own (their own batch, weighted
    by `generated_weight`: a generator's mistakes should not weigh as much as a true label),
    and in semi mode (an "unlabeled" stream) FixMatch's consistency term. Returns the loss, its
    parts for the log, and FreeMatch's updated confidence levels. `teacher`: the features'
    label distribution of each unlabeled image, or None."""
    x, y, _ = next(batches["labeled"])
    x_gen, y_gen = next(batches["synthetic"])[:2] if "synthetic" in batches else (x[:0], y[:0])
    if "unlabeled" not in batches:
        logits_x, logits_gen = model(torch.cat([x, x_gen])).split([len(x), len(x_gen)])
        loss_x = losses.supervised_loss(logits_x, y)
        parts = {"loss_x": loss_x}
        loss = loss_x
        if len(x_gen):
            parts["loss_g"] = losses.supervised_loss(logits_gen, y_gen)
            loss = loss + generated_weight * parts["loss_g"]
        return loss, parts, levels
    x_weak, x_strong, _, index = next(batches["unlabeled"])
    if nuisances is not None:
        with seeded_cpu_rng(nuisance_seed):
            x, x_gen, x_strong = (nuisances((v + 1) / 2) * 2 - 1 if len(v) else v
                                  for v in (x, x_gen, x_strong))
    sizes = [len(x), len(x_gen), len(x_weak), len(x_strong)]
    logits = model(torch.cat([x, x_gen, x_weak, x_strong]))  # one pass: shared BN stats
    logits_x, logits_gen, logits_weak, logits_strong = logits.split(sizes)
    probs = logits_weak.detach().float().softmax(dim=1)
    if teacher is not None:
        # The features' labels stay a second teacher: the classifier's own guesses alone
        # drift from them as it fits the few labels.
        probs = (probs + teacher[index.cpu()].to(probs.device)) / 2
    batch_conf = rt.fabric.all_reduce(probs.max(dim=1).values.mean(), reduce_op="mean")
    batch_prior = rt.fabric.all_reduce(probs.mean(dim=0), reduce_op="mean")
    levels = {"global": losses.ema(levels["global"], batch_conf, lab.threshold_momentum),
              "per_class": losses.ema(levels["per_class"], batch_prior,
                                      lab.threshold_momentum),
              "prior": levels["prior"]}
    if lab.dist_align:
        probs = losses.align_distribution(probs, levels["per_class"], levels["prior"])
    threshold = (losses.adaptive_thresholds(levels["global"], levels["per_class"],
                                            levels["prior"])
                 if lab.thresholds == "adaptive"
                 else torch.tensor(lab.threshold, device=probs.device))
    pseudo, mask = losses.pseudo_label_mask(probs, threshold)
    loss_x = losses.supervised_loss(logits_x, y)
    loss_u = losses.consistency_loss(logits_strong, pseudo, mask)
    loss = loss_x + lab.lambda_u * loss_u
    parts = {"loss_x": loss_x, "loss_u": loss_u, "mask": mask.float().mean(),
             "threshold": threshold.float().mean()}
    if len(x_gen):
        parts["loss_g"] = losses.supervised_loss(logits_gen, y_gen)
        loss = loss + generated_weight * parts["loss_g"]
    return loss, parts, levels
