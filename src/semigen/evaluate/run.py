"""`semigen evaluate RUN`: metrics on real held-out images only.

The classifier (the label stage's final EMA weights) on the test set: accuracy overall and per
class, the confusion matrix, calibration; the pseudo-labels against the held-out truth where it is
known. With a generator in the run and a built-in data set: FID, KID and class consistency,
overall and per class. Results go to metrics.json (``evaluate``) and are returned."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from .. import checkpoint
from ..config import BUILTINS, Config
from ..data import load_dataset
from ..generate.train import generator_from_checkpoint, read_pseudo_labels
from ..label import nets
from ..label.train import predict, scores
from ..rundir import RunDir

log = logging.getLogger("semigen")


def classifier_metrics(model, data, device="cpu") -> dict:
    probs = predict(model, data.test.images, device)
    target = torch.from_numpy(data.test.labels)
    confusion = multiclass_confusion_matrix(probs.argmax(1), target, len(data.classes))
    per_class = confusion.diag() / confusion.sum(1).clamp_min(1)
    return {**scores(probs, data.test.labels, "test"), "n_test": len(target),
            "per_class_accuracy": dict(zip(data.classes, per_class.tolist(), strict=True)),
            "confusion_matrix": confusion.tolist()}


def pseudo_label_metrics(run: Path, data) -> dict:
    path = run / "pseudo_labels.csv"
    if not path.exists() or data.unlabeled_truth is None:
        return {}
    pseudo = read_pseudo_labels(path, data.classes)
    truth = dict(zip(data.unlabeled.ids, data.unlabeled_truth.tolist(), strict=True))
    rows = [(label, conf, truth[i]) for i, (label, conf) in pseudo.items() if i in truth]
    if not rows:
        return {}
    labels, conf, true = (torch.tensor(col) for col in zip(*rows, strict=True))
    right = (labels == true).float()
    found = {"pseudo_label_accuracy": right.mean().item(), "n_pseudo_labels": len(rows)}
    for bar in (0.9, 0.95):
        kept = conf >= bar
        found[f"pseudo_label_accuracy_at_{bar}"] = right[kept].mean().item() if kept.any() \
            else None
        found[f"pseudo_label_coverage_at_{bar}"] = kept.float().mean().item()
    return found


def evaluate_run(cfg: Config, per_class: int = 1000, seed: int = 0,
                 evaluator_steps: int | None = None) -> dict:
    run_path = Path(cfg.run.out)
    data = load_dataset(cfg.data)
    data.report.raise_if_errors()
    found: dict = {"data": cfg.data.source}
    label_ckpt = run_path / "checkpoints" / "label" / "latest.pt"
    if label_ckpt.exists() and data.test is not None:
        found["classifier"] = classifier_metrics(nets.from_checkpoint(checkpoint.load(label_ckpt)),
                                                 data)
    found["pseudo_labels"] = pseudo_label_metrics(run_path, data)
    gen_ckpt = run_path / "checkpoints" / "generate" / "latest.pt"
    if gen_ckpt.exists():
        if cfg.data.source in BUILTINS and data.test is not None:
            from .images import EVALUATOR_STEPS, image_metrics, load_evaluator
            evaluator, about = load_evaluator(cfg, data.shape, evaluator_steps or EVALUATOR_STEPS)
            generator = generator_from_checkpoint(checkpoint.load(gen_ckpt))
            found["images"] = {"feature_network": about, **image_metrics(
                generator, evaluator, data.test.images, data.test.labels, data.classes,
                per_class, seed)}
        else:
            found["images"] = {"skipped": "image metrics need a built-in data set's evaluator "
                                          "network (user folders: coming with Inception weights)"}
    with RunDir(run_path) as run:
        run.update_metrics("evaluate", found)
    return found
