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

import numpy as np
import torch
import torch.nn.functional as F

from .losses import expected_calibration_error
from .represent import describe_estimate, wilson_interval

STAGE = "calibrate"


def two_folds(labels: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """Fold 0 or 1 for each labeled image, alternating within each class in a seeded order;
    -1 (always trained on, never held out) for a class with a single labeled image."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) >= 2:
            fold[members] = np.arange(len(members)) % 2
    return fold


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
