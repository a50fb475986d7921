"""A classifier's predictions: softmax probabilities for images, their scores against known
truth, the pseudo-labels file, and `semigen predict RUN IMAGES --out F.csv` (new images
labeled by a run's trained classifier)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from ..config import ConfigError
from ..data import Dataset, read_images
from ..data.cells import safe_row
from ..run import check_output, load_stage, replacing
from ..runtime import pick_accelerator
from . import losses, nets

log = logging.getLogger("semigen")



def predict(model: torch.nn.Module, images: np.ndarray, device, batch_size: int = 512
            ) -> torch.Tensor:
    """Softmax probabilities for uint8 N x H x W x C images, in eval mode, on CPU at the end."""
    if not len(images):
        return torch.zeros(0)
    return nets.embed(model, images, device, batch_size).softmax(dim=1)


def scores(probs: torch.Tensor, truth: np.ndarray, prefix: str) -> dict:
    """Accuracy and calibration of predictions against known truth."""
    target = torch.from_numpy(truth)
    accuracy = multiclass_accuracy(probs.argmax(1), target, num_classes=probs.shape[1],
                                   average="micro")
    return {f"{prefix}_accuracy": accuracy.item(),
            f"{prefix}_ece": losses.expected_calibration_error(probs, target)}


def accuracy(model: torch.nn.Module, images, device) -> float:
    return scores(predict(model, images.images, device), images.labels, "x")["x_accuracy"]


def evaluate(model, data: Dataset, device, unlabeled_index: np.ndarray,
             unlabeled_probs: torch.Tensor | None = None) -> dict:
    """Test accuracy and calibration; pseudo-label accuracy, calibration and per-class counts
    on the given unlabeled images (their truth is known for built-ins only)."""
    found = {}
    if data.test is not None:
        found |= scores(predict(model, data.test.images, device), data.test.labels, "test")
    if len(unlabeled_index):
        probs = (unlabeled_probs if unlabeled_probs is not None
                 else predict(model, data.unlabeled.images[unlabeled_index], device))
        found["pseudo_label_counts"] = torch.bincount(
            probs.argmax(1), minlength=len(data.classes)).tolist()
        found["mean_confidence"] = probs.max(1).values.mean().item()
        if data.unlabeled_truth is not None:
            found |= scores(probs, data.unlabeled_truth[unlabeled_index], "pseudo_label")
    return found


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items()
                     if not isinstance(v, list | dict) and not k.endswith("_why"))


def predict_images(run_path: str | Path, images: str | Path, out: str | Path,
                   which: str = "latest", device: str = "auto", overwrite: bool = False) -> dict:
    """Write ``path,label,confidence`` for every readable image under `images`; skipped files
    are listed in the log. `which` is latest, best, or a checkpoint path. `out` is never one
    of the images read, nor an existing file unless `overwrite`. Returns counts."""
    out = check_output(out, run_path, overwrite)
    path, state = load_stage(run_path, "label", which, "classifier")
    model = nets.from_checkpoint(state)
    found, skipped = read_images(images, tuple(state["image_shape"]), progress=True)
    source = Path(images).expanduser()
    read = {(source if source.is_file() else source / rel).resolve()
            for rel in [*found.ids, *(rel for rel, _ in skipped)]}
    if out.resolve() in read:
        raise ConfigError(f"--out {out}: is one of the images to label; choose another name")
    for rel, why in skipped:
        log.warning(f"skipped {rel}: {why}")
    accelerator = pick_accelerator(device)
    probs = predict(model.to(accelerator), found.images, accelerator)
    confidence, labels = probs.max(dim=1) if len(found) else (probs, probs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out, new=not overwrite) as f:  # a file written meanwhile: refused
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence"])
        for rel, label, conf in zip(found.ids, labels.tolist(), confidence.tolist(),
                                    strict=True):
            writer.writerow(safe_row([rel, state["classes"][label], f"{conf:.4f}"]))
    log.info(f"predicted {len(found)} images with {path} into {out}"
             + (f"; skipped {len(skipped)} (listed above)" if skipped else ""))
    return {"predicted": len(found), "skipped": len(skipped), "checkpoint": str(path)}
