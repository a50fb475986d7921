"""(1) label: the classifier training loop, readable top to bottom in `train`.

Modes on the same code:
- ``semi``: FixMatch with FreeMatch's self-adaptive thresholds and distribution alignment: the
  labeled batch's cross-entropy, plus cross-entropy of strong views of unlabeled images against
  the confident predictions on their weak views.
- ``labels-only``: the labeled images alone (the lower baseline).
- ``all-labels``: every training image with its true label (the upper baseline, built-ins).

The EMA weights evaluate and pseudo-label. At the end, every unlabeled image gets a label and a
confidence in ``RUN/pseudo_labels.csv``.

A joint round (``round_index`` >= 1, see `semigen.joint`) runs the same loop as its own stage,
``label-r<N>``: it starts from the previous classifier (``init``), adds generated images with
their class to every labeled batch, and trains ``fit.label_steps`` steps at ``fit.label_lr``."""

from __future__ import annotations

import csv
import logging
import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from .. import checkpoint, runtime
from ..config import Config, validate
from ..data import DataError, Dataset, endless_batches, load_dataset, strong, weak
from ..data.transforms import contrastive_views, seeded_cpu_rng
from ..rundir import RunDir, check_continuation, check_split, note_resume
from ..runtime import mix_seed, progress
from ..training import make_ema, payload, same_weights_on_all_ranks, sync_buffers
from . import calibrate, losses, nets, represent

STAGE = "label"
log = logging.getLogger("semigen")


def training_set(data: Dataset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels the supervised loss sees in `mode`."""
    if mode == "all-labels":
        if data.unlabeled_truth is None:
            raise DataError("label.mode all-labels needs the true labels of the unlabeled "
                            "images: a built-in data set")
        return (np.concatenate([data.labeled.images, data.unlabeled.images]),
                np.concatenate([data.labeled.labels, data.unlabeled_truth]))
    return data.labeled.images, data.labeled.labels


def cosine_lr(total_steps: int):
    """FixMatch's schedule: lr * cos(7 pi t / 16 T), which ends at about 0.2 lr."""
    return lambda step: math.cos(7 * math.pi * step / (16 * total_steps))


def predict(model: torch.nn.Module, images: np.ndarray, device, batch_size: int = 512
            ) -> torch.Tensor:
    """Softmax probabilities for uint8 N x H x W x C images, in eval mode, on CPU at the end."""
    if not len(images):
        return torch.zeros(0)
    return represent.embed(model, images, device, batch_size).softmax(dim=1)


def scores(probs: torch.Tensor, truth: np.ndarray, prefix: str) -> dict:
    """Accuracy and calibration of predictions against known truth."""
    target = torch.from_numpy(truth)
    accuracy = multiclass_accuracy(probs.argmax(1), target, num_classes=probs.shape[1],
                                   average="micro")
    return {f"{prefix}_accuracy": accuracy.item(),
            f"{prefix}_ece": losses.expected_calibration_error(probs, target)}


def accuracy(model: torch.nn.Module, images, device) -> float:
    return scores(predict(model, images.images, device), images.labels, "x")["x_accuracy"]


def write_pseudo_labels(path: Path, ids: list[str], classes: list[str], probs: torch.Tensor,
                        round_index: int = 0) -> None:
    confidence, labels = probs.reshape(len(ids), len(classes)).max(dim=1)  # none: 0 x C
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence", "round"])
        for image_id, label, conf in zip(ids, labels.tolist(), confidence.tolist(), strict=True):
            writer.writerow([image_id, classes[label], f"{conf:.4f}", round_index])
    tmp.replace(path)


def train(cfg: Config, round_index: int = 0, init: Path | None = None,
          synthetic: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Train the classifier of ``cfg.label.mode`` into ``cfg.run.out``; return final metrics.

    Round 0 trains from scratch for ``label.steps``. A joint round starts from the classifier
    checkpoint `init` and mixes the `synthetic` (uint8 N x H x W x C images, class indices) into
    the labeled batches, ``fit.synthetic_ratio`` of them per real labeled image."""
    validate(cfg)
    lab = cfg.label
    semi = lab.mode == "semi"
    stage = checkpoint.stage_name(STAGE, round_index)
    total_steps, lr = (lab.steps, lab.lr) if round_index == 0 else \
        (cfg.fit.label_steps, cfg.fit.label_lr)
    changed = check_continuation(cfg)  # refuse another data set's run before writing
    rt = runtime.start(cfg.runtime)
    with RunDir(cfg.run.out, writer=rt.is_writer) as run:
        ckpts = checkpoint.Checkpointer(run.checkpoints / stage, cfg.run.keep_last)
        resume_from = ckpts.resume_path(cfg.run.resume)  # refuse before anything is written

        data = load_dataset(cfg.data, progress=rt.is_writer and cfg.run.progress)
        check_split(run.path, data.split_record(cfg.data))
        if round_index == 0:
            run.note_continuation(changed)
        run.write_json("data_report.json", data.report.to_dict())
        data.report.raise_if_errors()
        if semi and not len(data.unlabeled):
            raise DataError(f"{cfg.data.source}: label.mode semi needs unlabeled images "
                            "(DATA/unlabeled/ or CSV rows with an empty label)")
        if round_index == 0:  # a round continues a run whose config and split are written
            run.info(data.report.format())
            run.write_config(cfg)
            run.write_json("split.json", data.split_record(cfg.data))

        images, labels = training_set(data, lab.mode)
        num_classes = len(data.classes)
        architecture = lab.backbone or lab.net
        net = nets.build(architecture, data.shape[2], num_classes, lab.width).to(rt.device)
        fresh = round_index == 0 and resume_from is None
        if fresh and lab.weights:  # every mode: the baselines start from the same weights
            run.info(nets.load_backbone_weights(net, architecture, lab.weights))
        feature_labels = features = None  # every training image's features, if learned
        learned = semi and lab.pretrain_steps > 0  # a representation stage comes first
        from_features = learned or (semi and bool(lab.weights))  # labels from features first
        # Colour is a nuisance of the self-supervised views unless it tells the labeled
        # classes apart (a function of the labeled images: the same on a resume).
        colour_views = from_features and not represent.colour_tells_classes_apart(
            data.labeled.images, data.labeled.labels)
        if fresh and learned:
            run.info(f"{represent.STAGE}: colour is " + (
                "a nuisance (it does not tell the labeled classes apart)" if colour_views else
                "kept in the views: it tells the labeled classes apart"))
            represent.pretrain(cfg, data, rt, run, net, colour_views)
        if fresh and from_features:  # features from every training image, then their labels
            found, feature_labels, features = labels_from_features(net, data, rt.device)
            record_estimate(run, rt, represent.STAGE, lab.pretrain_steps, found,
                            represent.describe_estimate(found, num_classes))
        # After the representation stage, the labeled and strong views also carry the
        # nuisances the features learned to ignore: without them, the few labels teach colour
        # or position back, and the fine-tuned classifier falls below the features' labels.
        nuisances = (contrastive_views(data.shape, data.hflip, data.rotate, colour_views)
                     if from_features else None)
        calibration = None  # the cross-fitted accuracy estimate and temperature
        if fresh and lab.mode != "all-labels" and lab.calibration_steps > 0:
            calibration = cross_fit(cfg, data, rt, run, net, features, nuisances)
        ema, optimizer, schedule = fine_tuning(net, lab, lr, total_steps)
        levels = initial_levels(num_classes)
        start_step = 0
        if resume_from is not None:
            state = checkpoint.load(resume_from)
            checkpoint.restore(state, {"model": net, "ema": ema, "optimizer": optimizer,
                                       "schedule": schedule})
            with checkpoint.reading(state, "classifier"):
                levels = {k: state["levels"][k] for k in levels}
                feature_labels = state.get("feature_labels")
                calibration = state.get("calibration")
                start_step = int(state["step"])
                checkpoint.set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
            note_resume(run, stage, resume_from, state, cfg)
        else:
            run.rewind(stage, 0)  # lines of an attempt that died before its first checkpoint
            if init is not None:  # a joint round: the previous classifier and its levels
                state = checkpoint.load(init)
                checkpoint.restore(state, {"model": net, "ema": ema})
                with checkpoint.reading(state, "classifier"):
                    levels = {k: state["levels"][k] for k in levels}
                    calibration = state.get("calibration")  # round 0's
                run.info(f"{stage}: starting from {init}")
        if rt.is_writer:
            ckpts.remove_leftovers()
        levels = {k: v.to(rt.device) for k, v in levels.items()}
        model, optimizer = rt.fabric.setup(net, optimizer)
        ema.to(rt.device)

        workers = cfg.runtime.num_workers
        streams = 4 * round_index  # each round draws batches of its own
        labeled_batches = endless_batches(rt.fabric, images, labels,
                                          [weak(data.shape, data.hflip)], lab.batch_size,
                                          rt.data_seed(streams), start_step, workers)
        if semi:
            unlabeled_batches = endless_batches(
                rt.fabric, data.unlabeled.images, data.unlabeled.labels,
                [weak(data.shape, data.hflip), strong(data.shape, data.hflip)],
                lab.batch_size * lab.uratio, rt.data_seed(streams + 1), start_step, workers)
        if synthetic is not None:
            synthetic_batches = endless_batches(
                rt.fabric, *synthetic, [weak(data.shape, data.hflip)],
                max(1, round(lab.batch_size * cfg.fit.synthetic_ratio)),
                rt.data_seed(streams + 2), start_step, workers)
        batches = {"labeled": labeled_batches}
        if semi:
            batches["unlabeled"] = unlabeled_batches
        if synthetic is not None:
            batches["synthetic"] = synthetic_batches
        temperature = calibration["temperature"] if calibration else 1.0
        nuisance_seed = rt.data_seed(streams + 3)
        # A fixed sample of unlabeled images scores the pseudo-labels during training.
        probe = np.random.default_rng(0).permutation(len(data.unlabeled))[:lab.eval_unlabeled]

        metrics = {}
        for step in progress(range(start_step, total_steps), initial=start_step,
                             total=total_steps, desc=f"{stage} ({lab.mode})", unit="step",
                             disable=not (rt.is_writer and cfg.run.progress)):
            loss, parts, levels = step_loss(model, lab, rt, batches, feature_labels, levels,
                                            nuisances, mix_seed(nuisance_seed, step))
            optimizer.zero_grad(set_to_none=True)
            rt.fabric.backward(loss)
            optimizer.step()
            schedule.step()
            ema.update_parameters(net)

            done = step + 1
            if done % cfg.run.log_every == 0 or done == total_steps:
                run.stats(stage, done, loss=loss.item(), lr=schedule.get_last_lr()[0],
                          **{k: v.item() for k, v in parts.items()})
            evaluating = done % lab.eval_every == 0 or done == total_steps
            saving = done % cfg.run.checkpoint_every == 0 or done == total_steps
            if evaluating or saving:
                sync_buffers(rt.fabric, net)
                sync_buffers(rt.fabric, ema.module)
            if evaluating:  # test figures are logged, never used to choose anything
                metrics = evaluate(nets.tempered(ema.module, temperature), data, rt.device,
                                   probe)
                run.stats(stage, done, **metrics)
            if saving:
                # Every rank's RNG is kept, so that each resumes its own stream.
                rng = rt.fabric.all_gather(checkpoint.rng_state()["torch"]).reshape(
                    rt.world_size, -1).cpu()
                if rt.is_writer:
                    ckpts.save(payload(
                        "classifier", stage, lab.mode,
                        {"name": architecture, "in_channels": data.shape[2],
                         "num_classes": num_classes, "width": lab.width},
                        data.classes, data.shape, cfg.to_dict(),
                        model=net.state_dict(), ema=ema.state_dict(),
                        optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                        levels={k: v.cpu() for k, v in levels.items()},
                        feature_labels=feature_labels, calibration=calibration,
                        temperature=temperature, rng=[{"torch": r} for r in rng]), done)
                rt.fabric.barrier()

        prints = same_weights_on_all_ranks(rt.fabric, net, "classifier")

        # Pseudo-labels for every unlabeled image, from the final EMA weights.
        classifier = nets.tempered(ema.module, temperature)
        probs = predict(classifier, data.unlabeled.images, rt.device)
        final = evaluate(classifier, data, rt.device, np.arange(len(data.unlabeled)), probs)
        if temperature != 1.0 and data.test is not None:  # what the temperature changed
            final["test_ece_uncalibrated"] = scores(predict(ema.module, data.test.images,
                                                            rt.device), data.test.labels,
                                                    "test")["test_ece"]
        metrics = final | {"mode": lab.mode, "steps": total_steps, "world_size": rt.world_size,
                           "labeled": len(labels), "unlabeled": len(data.unlabeled),
                           "synthetic": 0 if synthetic is None else len(synthetic[1])}
        if rt.is_writer:
            write_pseudo_labels(run.path / "pseudo_labels.csv", data.unlabeled.ids,
                                data.classes, probs, round_index)
        run.stats(stage, total_steps, event="done", weight_fingerprints=prints, **metrics)
        run.update_metrics(stage, metrics)
        rt.fabric.barrier()  # the next stage, on every rank, reads what rank 0 just wrote
        run.info(f"{stage} done: " + describe(metrics))
        return metrics


def fine_tuning(net: torch.nn.Module, lab, lr: float, total_steps: int):
    """The EMA of `net`, its optimiser and its schedule, for one fine-tuning loop (the main one
    or a calibration half)."""
    ema = make_ema(net, lab.ema_decay)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=lab.momentum,
                                weight_decay=lab.weight_decay, nesterov=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr(total_steps))
    return ema, optimizer, schedule


def initial_levels(num_classes: int) -> dict:
    """FreeMatch's confidence levels before any batch: global, and the mean prediction per
    class, both at chance."""
    return {"global": torch.tensor(1.0 / num_classes),
            "per_class": torch.full((num_classes,), 1.0 / num_classes)}


def step_loss(model, lab, rt, batches: dict, teacher: torch.Tensor | None, levels: dict,
              nuisances=None, nuisance_seed: int = 0) -> tuple[torch.Tensor, dict, dict]:
    """One training step's loss from the next batches: the labeled cross-entropy, and in
    semi mode (an "unlabeled" stream) FixMatch's consistency term. Returns the loss, its
    parts for the log, and FreeMatch's updated confidence levels. `teacher`: the features'
    label distribution of each unlabeled image, or None."""
    x, y, _ = next(batches["labeled"])
    if "synthetic" in batches:  # generated images count as labeled ones
        x_synthetic, y_synthetic, _ = next(batches["synthetic"])
        x, y = torch.cat([x, x_synthetic]), torch.cat([y, y_synthetic])
    if "unlabeled" not in batches:
        loss = losses.supervised_loss(model(x), y)
        return loss, {"loss_x": loss}, levels
    x_weak, x_strong, _, index = next(batches["unlabeled"])
    if nuisances is not None:
        with seeded_cpu_rng(nuisance_seed):
            x, x_strong = (nuisances((v + 1) / 2) * 2 - 1 for v in (x, x_strong))
    logits = model(torch.cat([x, x_weak, x_strong]))  # one pass: shared BN stats
    logits_x, logits_weak, logits_strong = logits.split([len(x), len(x_weak), len(x_strong)])
    probs = logits_weak.detach().float().softmax(dim=1)
    if teacher is not None:
        # The features' labels stay a second teacher: the classifier's own guesses alone
        # drift from them as it fits the few labels.
        probs = (probs + teacher[index.cpu()].to(probs.device)) / 2
    batch_conf = rt.fabric.all_reduce(probs.max(dim=1).values.mean(), reduce_op="mean")
    batch_prior = rt.fabric.all_reduce(probs.mean(dim=0), reduce_op="mean")
    levels = {"global": losses.ema(levels["global"], batch_conf, lab.threshold_momentum),
              "per_class": losses.ema(levels["per_class"], batch_prior,
                                      lab.threshold_momentum)}
    if lab.dist_align:
        uniform = torch.full_like(levels["per_class"], 1.0 / len(levels["per_class"]))
        probs = losses.align_distribution(probs, levels["per_class"], uniform)
    threshold = (losses.adaptive_thresholds(levels["global"], levels["per_class"])
                 if lab.thresholds == "adaptive"
                 else torch.tensor(lab.threshold, device=probs.device))
    pseudo, mask = losses.pseudo_label_mask(probs, threshold)
    loss_x = losses.supervised_loss(logits_x, y)
    loss_u = losses.consistency_loss(logits_strong, pseudo, mask)
    return loss_x + lab.lambda_u * loss_u, {"loss_x": loss_x, "loss_u": loss_u,
                                            "mask": mask.float().mean(),
                                            "threshold": threshold.float().mean()}, levels


def cross_fit(cfg: Config, data: Dataset, rt, run: RunDir, net: torch.nn.Module,
              features: represent.Features | None, nuisances) -> dict | None:
    """Two-fold cross-fitting (see `calibrate`): a copy of `net` fine-tuned for
    ``label.calibration_steps`` on each half of the labeled images predicts the other half.
    Returns the estimate and the temperature (also logged and in metrics.json), or None where
    no class has two labeled images."""
    lab = cfg.label
    semi = lab.mode == "semi"
    classes = len(data.classes)
    fold = calibrate.two_folds(data.labeled.labels, classes)
    if (fold < 0).all():
        run.info(f"{calibrate.STAGE}: skipped, no class has two labeled images to hold out")
        return None
    run.rewind(calibrate.STAGE, 0)  # the lines of an attempt stopped before the label stage
    logits = torch.zeros(len(fold), classes)
    for f in (0, 1):
        held = fold == f
        copy = deepcopy(net)  # `net` itself starts the main fine-tuning untouched
        batches, teacher = {}, None
        if semi:
            unlabeled = np.concatenate([data.unlabeled.images, data.labeled.images[held]])
            if features is not None:  # the features' labels, spread without the held half
                known = np.concatenate([np.where(held, -1, data.labeled.labels),
                                        np.full(len(data.unlabeled), -1)])
                spread = represent.propagate(features.links, known, classes)
                represent.fit_head(copy.head, features.values, spread)
                teacher = torch.cat([spread[len(fold):], spread[:len(fold)][held]])
            batches["unlabeled"] = endless_batches(
                rt.fabric, unlabeled, np.full(len(unlabeled), -1),
                [weak(data.shape, data.hflip), strong(data.shape, data.hflip)],
                lab.batch_size * lab.uratio, rt.data_seed(200 + 2 * f), 0)
        batches["labeled"] = endless_batches(
            rt.fabric, data.labeled.images[~held], data.labeled.labels[~held],
            [weak(data.shape, data.hflip)], lab.batch_size, rt.data_seed(201 + 2 * f), 0)
        ema, optimizer, schedule = fine_tuning(copy, lab, lab.lr, lab.calibration_steps)
        model, optimizer = rt.fabric.setup(copy, optimizer)
        ema.to(rt.device)
        levels = {k: v.to(rt.device) for k, v in initial_levels(classes).items()}
        for step in progress(range(lab.calibration_steps), desc=f"{calibrate.STAGE} (fold {f})",
                             unit="step", disable=not (rt.is_writer and cfg.run.progress)):
            loss, _, levels = step_loss(model, lab, rt, batches, teacher, levels, nuisances,
                                        mix_seed(rt.data_seed(300 + f), step))
            optimizer.zero_grad(set_to_none=True)
            rt.fabric.backward(loss)
            optimizer.step()
            schedule.step()
            ema.update_parameters(copy)
        sync_buffers(rt.fabric, ema.module)
        logits[held] = represent.embed(ema.module, data.labeled.images[held], rt.device)
    used = fold >= 0
    found = calibrate.summarise(logits[used], data.labeled.labels[used], fold[used])
    record_estimate(run, rt, calibrate.STAGE, lab.calibration_steps, found,
                    calibrate.describe(found, classes))
    return found


def record_estimate(run: RunDir, rt, stage: str, step: int, found: dict,
                    sentence: tuple[str, bool]) -> None:
    """A held-out estimate's figures into stats.jsonl, metrics.json and the log, and its
    sentence into the log: a warning when near chance."""
    run.stats(stage, step, event="done", **found)
    run.update_metrics(stage, found)
    run.info(f"{stage} done: " + describe(found))
    note, near_chance = sentence
    if rt.is_writer:
        (log.warning if near_chance else log.info)(note)


def describe(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items() if not isinstance(v, list))


def labels_from_features(net: torch.nn.Module, data: Dataset, device
                         ) -> tuple[dict, torch.Tensor, represent.Features]:
    """After the representation stage: spread the labels over the learned features, fit the
    classifier's head to the spread labels (fine-tuning starts from them), and return their
    figures (accuracy held out from the labeled images, and against known truth), the
    unlabeled images' label distributions, and the features (labeled images first), with
    their graph."""
    images = np.concatenate([data.labeled.images, data.unlabeled.images])
    represent.recalibrate_batch_norm(net.features, images, device)
    features = represent.features_of(net.features, images, device)
    targets = represent.first_labels(data, features.links)
    represent.fit_head(net.head, features.values, targets)
    labeled = np.arange(len(data.labeled))
    found = represent.cross_validated_accuracy(features.links, labeled, data.labeled.labels,
                                               len(data.classes))
    unlabeled_probs = targets[len(data.labeled):]
    found["features_mean_confidence"] = unlabeled_probs.max(1).values.mean().item()
    if data.unlabeled_truth is not None:
        found |= scores(unlabeled_probs, data.unlabeled_truth, "features_pseudo_label")
    if data.test is not None:  # logged, never used to choose anything
        found |= scores(predict(net, data.test.images, device), data.test.labels,
                        "features_test")
    return found, unlabeled_probs, features


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
