"""Honest confidence for the classifier without a test folder: two-fold cross-fitting.

Each half of the labeled images (split per class) is held out in turn while a copy of the
network is fine-tuned, at a reduced budget, on the other half with the same recipe (the
features' labels spread without the held-out half). Its predictions on the held-out half are
the only predictions of the pipeline on labeled images it never used. From them come an
accuracy estimate with a Wilson interval, and a temperature that scales the final
classifier's logits so that its confidences mean what they say (0.8: about 80 % right). The
expected calibration error after scaling is itself measured across the folds: the temperature
fitted on one half is scored on the other. Where that makes it worse than no scaling, the
temperature is not applied (1): with a few dozen held-out images, a fit can follow noise."""

from __future__ import annotations

import logging
from copy import deepcopy

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Dataset, endless_batches, strong, weak
from ..runtime import mix_seed
from ..stage import Stage, run_steps
from ..training import sync_buffers
from . import prior, represent
from .fixmatch import fine_tuning, initial_levels, step_loss
from .losses import expected_calibration_error
from .predict import format_metrics
from .represent import describe_estimate, wilson_interval

STAGE = "calibrate"
# Where the unlabeled images' final labels come from (`final_labels`), in words.
FINAL_LABELS = {"classifier": "classifier", "features": "features' labels"}
log = logging.getLogger("semigen")


def two_folds(labels: np.ndarray, num_classes: int, seed: int = 0,
              allowed: np.ndarray | None = None) -> np.ndarray:
    """Fold 0 or 1 for each labeled image, alternating within each class in a seeded order;
    -1 (always trained on, never held out) for a class with a single labeled image, and for
    the images `allowed` leaves out (`represent.folds_per_class`)."""
    return represent.folds_per_class(labels, num_classes, 2, seed, allowed)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T (0.05 to 20) that minimises the negative log-likelihood of
    softmax(logits / T): Guo et al.'s temperature scaling, on a log scale. The targets keep
    1 / (n + 2) of their mass spread over the classes (Laplace's rule of succession): n held-out
    images all right do not prove that no image is wrong, and without it T would go to 0 and
    every confidence to 1."""
    smoothing = 1.0 / (len(labels) + 2)
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def nll():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels, label_smoothing=smoothing)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().clamp(np.log(0.05), np.log(20)).exp())


def summarise(logits: torch.Tensor, labels: np.ndarray, fold: np.ndarray) -> dict:
    """From held-out logits (one row per image with fold >= 0): the pipeline's estimated
    accuracy with its interval, the temperature, and the held-out ECE before and after
    scaling (after: each fold scored with the temperature fitted on the other). The temperature
    to apply is the one fitted on every held-out image where scaling helped across the folds,
    else 1 (`temperature_fitted` keeps the fit)."""
    target = torch.from_numpy(labels).long()
    right = int((logits.argmax(1) == target).sum())
    low, high = wilson_interval(right, len(target))
    probs_after = torch.empty_like(logits)
    for f in (0, 1):
        other = torch.from_numpy(fold != f)
        t = fit_temperature(logits[other], target[other]) if other.any() else 1.0
        probs_after[~other] = (logits[~other] / t).softmax(1)
    before = expected_calibration_error(logits.softmax(1), target)
    after = expected_calibration_error(probs_after, target)
    fitted = fit_temperature(logits, target)
    return {"classifier_estimate": right / len(target), "classifier_estimate_low": low,
            "classifier_estimate_high": high, "calibration_held_out": len(target),
            "temperature": fitted if after < before else 1.0, "temperature_fitted": fitted,
            "held_out_ece_before": before, "held_out_ece_after": after}


def paired_features_estimate(probs: torch.Tensor, labels: np.ndarray, fold: np.ndarray
                             ) -> dict:
    """The features' labels judged on the same held-out halves as the classifier (each made
    without its half): their accuracy with its interval, and the temperature that calibrates
    them (`summarise` on their log-probabilities), so that the two candidates for the final
    labels (`final_labels`) are compared image for image."""
    found = summarise(probs.clamp_min(1e-6).log(), labels, fold)
    return {"feature_labels_estimate": found["classifier_estimate"],
            "feature_labels_estimate_low": found["classifier_estimate_low"],
            "feature_labels_estimate_high": found["classifier_estimate_high"],
            "feature_labels_temperature": found["temperature"]}


def final_labels(calibration: dict | None) -> tuple[str, str]:
    """Which candidate labels the unlabeled images, and why: the features' labels where, on the
    same held-out halves, they are more often right than the classifier trained from them (a
    stage never hands out labels its own estimate says are worse); else, and on a tie (it also
    labels new images), the classifier."""
    if not calibration or calibration.get("feature_labels_estimate") is None:
        return "classifier", "no held-out estimate of the features' labels to compare with"
    ours, theirs = calibration["classifier_estimate"], calibration["feature_labels_estimate"]
    held = calibration["calibration_held_out"]
    if theirs > ours:
        return "features", (f"the features' labels are estimated {theirs:.0%} right against the "
                            f"classifier's {ours:.0%} on the same {held} held-out labels")
    return "classifier", (f"the classifier is estimated {ours:.0%} right against the features' "
                          f"labels' {theirs:.0%} on the same {held} held-out labels")


def describe(found: dict, num_classes: int) -> tuple[str, bool]:
    """The log's sentence on the cross-fitted estimate and temperature; whether near chance."""
    text, near = describe_estimate(found, num_classes,
                                   "the classifier's labels (trained on half the labels)",
                                   "classifier_estimate")
    errors = (f"held-out calibration error {found['held_out_ece_before']:.3f} before, "
              f"{found['held_out_ece_after']:.3f} after")
    if found["temperature"] == 1.0 and found.get("temperature_fitted", 1.0) != 1.0:
        return (text + f"; confidences left as they are: the fitted temperature "
                f"{found['temperature_fitted']:.2f} made them worse on the other half "
                f"({errors})"), near
    return (text + f"; confidences divided by temperature {found['temperature']:.2f} "
            f"({errors})"), near


def cross_fit(stage: Stage, data: Dataset, net: torch.nn.Module,
              features: represent.Features | None, nuisances,
              class_prior: torch.Tensor | None = None) -> dict | None:
    """Two-fold cross-fitting: a copy of `net` fine-tuned for ``label.calibration_steps`` on
    each half of the labeled images predicts the other half. Returns the estimate and the
    temperature (also logged and in metrics.json), or None where no class has two labeled
    images."""
    lab, rt, run_dir = stage.cfg.label, stage.rt, stage.records
    semi = lab.mode == "semi"
    classes = len(data.classes)
    fold = two_folds(data.labeled.labels, classes, allowed=data.held_out_allowed())
    if (fold < 0).all():
        run_dir.info(f"{STAGE}: skipped, no class has two labeled images to hold out")
        return None
    run_dir.rewind(STAGE, 0)  # the lines of an attempt stopped before the label stage
    logits = torch.zeros(len(fold), classes)
    feature_labels = torch.zeros(len(fold), classes)  # the features' labels of the held half
    for f in (0, 1):
        held = fold == f
        copy = deepcopy(net)  # `net` itself starts the main fine-tuning untouched
        batches, teacher = {}, None
        if semi:
            unlabeled = np.concatenate([data.unlabeled.images, data.labeled.images[held]])
            if features is not None:  # the features' labels, made without the held half
                known = np.concatenate([np.where(held, -1, data.labeled.labels),
                                        np.full(len(data.unlabeled), -1)])
                spread = represent.labels_from(features, known, classes)
                if class_prior is not None:  # as the main labels are (`prior`)
                    spread = prior.reweighted(spread, prior.labeled_prior(
                        data.labeled.labels[~held], classes), class_prior)
                feature_labels[held] = spread[:len(fold)][held]
                represent.fit_head(copy.head, features.values, spread)
                if lab.second_teacher:
                    teacher = torch.cat([spread[len(fold):], spread[:len(fold)][held]])
            batches["unlabeled"] = endless_batches(
                rt.fabric, unlabeled, np.full(len(unlabeled), -1),
                [weak(data.shape, data.hflip), strong(data.shape, data.hflip)],
                lab.batch_size * lab.uratio, rt.data_seed(200 + 2 * f), 0)
        batches["labeled"] = endless_batches(
            rt.fabric, data.labeled.images[~held], data.labeled.labels[~held],
            [weak(data.shape, data.hflip)], lab.batch_size, rt.data_seed(201 + 2 * f), 0)
        averaged = fine_tune_fold(stage, copy, batches, teacher, nuisances,
                                  rt.data_seed(300 + f), f"{STAGE} (fold {f})", class_prior)
        logits[held] = represent.embed(averaged, data.labeled.images[held], rt.device)
    used = fold >= 0
    found = summarise(logits[used], data.labeled.labels[used], fold[used])
    if semi and features is not None:
        found |= paired_features_estimate(feature_labels[used], data.labeled.labels[used],
                                          fold[used])
    record_estimate(stage, STAGE, lab.calibration_steps, found, describe(found, classes))
    # Kept in the checkpoint (not the records): the only predictions on labeled images that did
    # not train on them, what finding a user's likely label errors needs (`semigen review`).
    return found | {"held_out_ids": [i for i, u in zip(data.labeled.ids, used, strict=True) if u],
                    "held_out_probs": logits[used].softmax(1)}


def fine_tune_fold(stage: Stage, net: torch.nn.Module, batches: dict,
                   teacher: torch.Tensor | None, nuisances, nuisance_seed: int, desc: str,
                   class_prior: torch.Tensor | None = None) -> torch.nn.Module:
    """Fine-tune `net` in place for ``label.calibration_steps`` steps of the main recipe;
    return its EMA network."""
    lab, rt = stage.cfg.label, stage.rt
    ema, optimizer, schedule = fine_tuning(net, lab, lab.lr, lab.calibration_steps)
    model, optimizer = rt.fabric.setup(net, optimizer)
    ema.to(rt.device)
    levels = {k: v.to(rt.device) for k, v in initial_levels(net.head.out_features,
                                                                  class_prior).items()}

    def step(t: int) -> dict:
        nonlocal levels
        loss, _, levels = step_loss(model, lab, rt, batches, teacher, levels, nuisances,
                                    mix_seed(nuisance_seed, t))
        optimizer.zero_grad(set_to_none=True)
        rt.fabric.backward(loss)
        optimizer.step()
        schedule.step()
        ema.update_parameters(net)
        return {}

    run_steps(stage, 0, lab.calibration_steps, step, desc, log=False)
    sync_buffers(rt.fabric, ema.module)
    return ema.module


def record_estimate(stage: Stage, name: str, step: int, found: dict,
                    sentence: tuple[str, bool]) -> None:
    """A held-out estimate's figures into stats.jsonl, metrics.json and the log (as stage
    `name`), and its sentence into the log: a warning when near chance."""
    stage.records.stats(name, step, event="done", **found)
    stage.records.update_metrics(name, found)
    stage.records.info(f"{name} done: " + format_metrics(found))
    note, near_chance = sentence
    if stage.rt.is_writer:
        (log.warning if near_chance else log.info)(note)
