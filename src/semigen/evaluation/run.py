"""`semigen evaluate RUN [--test DATA]`: metrics on real held-out images only.

The classifier (the last round's final EMA weights) on the test set (the data set's own, or the
class folders of ``--test DATA``): accuracy overall and per
class, the confusion matrix, calibration; the pseudo-labels against the held-out truth where it is
known. With a generator in the run and a built-in data set: FID, KID and class consistency,
overall and per class; with a generator, in every run, the classification accuracy score
of its images (`teaching`). Results go to the run's metrics (``evaluate``) and are returned."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from .. import checkpoint
from ..config import BUILTINS, Config, ConfigError
from ..data import DataError, ImageSet, read_class_folders
from ..generation import from_checkpoint
from ..generation.data import training_set
from ..labeling import nets
from ..labeling.predict import predict, scores
from ..run import Run, load_stage, open_run, writer_of
from ..runtime import use_threads
from .images import EvaluatorFeatures, InceptionFeatures, Judge, image_metrics, load_evaluator
from .judge import judge_features, probe_classifier
from .teaching import teaching_metrics

log = logging.getLogger("semigen")


def classifier_metrics(model, data, device="cpu") -> dict:
    probs = predict(model, data.test.images, device)
    target = torch.from_numpy(data.test.labels)
    confusion = multiclass_confusion_matrix(probs.argmax(1), target, len(data.classes))
    per_class = confusion.diag() / confusion.sum(1).clamp_min(1)
    return {**scores(probs, data.test.labels, "test"), "n_test": len(target),
            "per_class_accuracy": dict(zip(data.classes, per_class.tolist(), strict=True)),
            "confusion_matrix": confusion.tolist()}


def pseudo_label_metrics(run: Run) -> dict:
    data, pseudo = run.data, run.pseudo_labels()
    if pseudo is None or data.unlabeled_truth is None:
        return {}
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


def latest_checkpoint(run: Run, stage: str) -> Path | None:
    """The stage's last checkpoint, checked (`load_stage`: its kind, and that this run wrote
    it), or None where the run has none."""
    path = run.layout.final_checkpoint(stage)
    if not path.exists():
        return None
    return load_stage(run.path, stage, "latest", KINDS[stage])[0]


KINDS = {"label": "classifier", "generate": "generator"}


def check_networks(cfg: Config) -> None:
    """The networks an evaluation loads with a user's weights (the judge's
    ``evaluate.features``, Inception-v3's ``evaluate.inception_weights``), built and given them
    before anything is computed: a file of another architecture, inf or NaN in it, weights that
    cannot be downloaded here, each refused in one line naming the setting and the file."""
    ev = cfg.evaluate
    for setting, weights, load in (
            ("evaluate.features", ev.features, lambda: _judge_with_weights(ev)),
            ("evaluate.inception_weights", ev.inception_weights,
             lambda: InceptionFeatures(ev.inception_weights))):
        if not weights:
            continue
        try:
            load()
        except (ValueError, checkpoint.CheckpointError, OSError) as e:
            raise ConfigError(nets.refusal(e, f"{setting} {weights}", setting, weights)) from None


def _judge_with_weights(ev) -> None:
    judge = nets.Backbone(ev.features_net, 2)
    nets.load_backbone_weights(judge, ev.features_net, ev.features, "evaluate.features")
    nets.probe(judge.features, f"evaluate.features_net {ev.features_net}", 224)


def evaluate(cfg: Config, test: str | None = None) -> dict:
    """`semigen evaluate`: open the run and evaluate it; while another process trains it, the
    run is read and the metrics are printed, not stored."""
    check_networks(cfg)
    busy = writer_of(cfg.run.out)
    if busy:
        log.warning(f"{cfg.run.out} is being written by {busy}: the metrics are printed, not "
                    "stored in its metrics.json (run evaluate again when it has finished)")
    with open_run(cfg, writing=not busy) as run:
        return evaluate_run(run, test)


def evaluate_run(run: Run, test: str | None = None) -> dict:
    """Every metric the open run's checkpoints allow; `test` (a folder of class folders)
    replaces the data set's own held-out images for the classifier."""
    cfg, data = run.cfg, run.data
    use_threads(cfg.runtime.threads)
    found: dict = {"data": cfg.data.source}
    if test is not None:
        data.test, skipped = read_class_folders(test, data.classes, data.shape)
        if not len(data.test):
            raise DataError(f"{test}: no readable test images in its class folders")
        found["test_data"] = {"source": str(test), "images": len(data.test),
                              "skipped": [f"{path}: {why}" for path, why in skipped]}
    label_ckpt = latest_checkpoint(run, "label")
    if label_ckpt is not None and data.test is not None:
        found["classifier"] = classifier_metrics(nets.from_checkpoint(checkpoint.load(label_ckpt)),
                                                 data) | {"checkpoint": str(label_ckpt)}
    found["pseudo_labels"] = pseudo_label_metrics(run)
    gen_ckpt = latest_checkpoint(run, "generate")
    if gen_ckpt is not None:  # what the images teach: every run, its own folders too
        found["teaching"] = teaching_metrics(run, gen_ckpt, label_ckpt)
        found["images"] = generator_metrics(run, gen_ckpt, cfg.evaluate.per_class)
    run.records.update_metrics("evaluate", found)
    return found


def generator_metrics(run: Run, generator_checkpoint: Path, per_class: int,
                      copying: bool = True, beside: bool = True) -> dict:
    """FID, KID, precision, recall and class consistency of a generator checkpoint against
    the real test images (without a test folder: the training images), and with `copying` how
    much it copies its training images (those of the run's latest pseudo-labels). The judge:
    a built-in data set's evaluator network (with the self-supervised judge beside it, as its
    check, under ``judge``, unless `beside` is False); a user's own images get the
    self-supervised judge (`judge`), or Inception-v3's features with
    ``evaluate.inception_weights``."""
    cfg, data = run.cfg, run.data
    classifier = about = features = second = None
    if cfg.data.source in BUILTINS:
        classifier, about = load_evaluator(cfg, data.shape, cfg.evaluate.evaluator_steps, data)
        features = EvaluatorFeatures(classifier)
    if (cfg.evaluate.judge_steps or cfg.evaluate.features) and (features is None or beside):
        judge_net, judge_about = judge_features(cfg, data)
        probe, probe_about = probe_classifier(judge_net, data)
        judge_about["class_consistency_by"] = probe_about
        if features is None:
            features, classifier, about = judge_net, probe, judge_about
        else:
            second = Judge(judge_net, probe)
    if cfg.evaluate.inception_weights:
        features = InceptionFeatures(cfg.evaluate.inception_weights)
        about = {"network": "Inception-v3 pool features (2048-d)",
                 "weights": cfg.evaluate.inception_weights, "class_consistency_by": about}
    if features is None:
        return {"skipped": "no judge: evaluate.judge_steps is 0 and no evaluate.features or "
                           "evaluate.inception_weights is given"}
    real, against = data.test, "the test images"
    if real is None:  # a user's folder without test/: the training images
        real = ImageSet(data.labeled.ids + data.unlabeled.ids,
                        np.concatenate([data.labeled.images, data.unlabeled.images]),
                        np.concatenate([data.labeled.labels, np.full(len(data.unlabeled), -1)]))
        against = "the training images (no test folder)"
    state = checkpoint.load(generator_checkpoint)
    generator = from_checkpoint(state, guidance=cfg.generate.guidance,
                                sample_steps=cfg.generate.sample_steps)
    found = image_metrics(generator, Judge(features, classifier), real, data.classes, per_class,
                          cfg.evaluate.seed,
                          generator_training_images(state, run) if copying else None,
                          second)
    if "judge" in found:
        found["judge"]["feature_network"] = judge_about
    return {"feature_network": about, "real": against, "checkpoint": str(generator_checkpoint),
            "generator": generator.settings(), **found}


def generator_training_images(state: dict, run: Run) -> np.ndarray:
    """The images a generator checkpoint learned from: its mode, its confidence bar, and the
    run's latest pseudo-labels."""
    with checkpoint.reading(state, "generator"):
        mode, gen = state["mode"], state["config"]["generate"]
        bar, floor = gen["min_confidence"], gen.get("class_floor", 0.0)  # none before it was
    return training_set(run.data, mode, run.pseudo_labels(), bar, False, floor)[0]
