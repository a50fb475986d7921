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
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..config import Config, ConfigError
from ..data import DataError, Dataset, added, endless_batches, load_dataset, strong, weak
from ..data.transforms import contrastive_views
from ..rundir import RunDir, check_continuation, check_split, read_run_json, set_aside
from ..runtime import is_main_process, mix_seed
from ..stage import Stage, due, open_stage, resume_or_start, run_steps
from ..training import payload, same_weights_on_all_ranks, sync_buffers
from . import calibrate, nets, prior, represent
from .fixmatch import fine_tuning, initial_levels, step_loss
from .predict import evaluate, format_metrics, predict, scores, write_pseudo_labels

STAGE = "label"
log = logging.getLogger("semigen")
# label.* fields that decide the classifier: a run continues only with the same values
MODEL_FIELDS = {"label": ("mode", "net", "backbone", "weights", "width")}


def training_set(data: Dataset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels the supervised loss sees in `mode`."""
    if mode == "all-labels":
        if data.unlabeled_truth is None:
            raise DataError("label.mode all-labels needs the true labels of the unlabeled "
                            "images: a built-in data set")
        return (np.concatenate([data.labeled.images, data.unlabeled.images]),
                np.concatenate([data.labeled.labels, data.unlabeled_truth]))
    return data.labeled.images, data.labeled.labels


def check_backbone(cfg: Config) -> None:
    """Refuse a backbone that torchvision or timm does not know, or weights that are not there,
    before anything is written."""
    problem = nets.backbone_problem(cfg.label.backbone, cfg.label.weights)
    if problem:
        raise ConfigError(f"bad config:\n  {problem}")


def take_added_labels(cfg: Config) -> None:
    """Before a run continues with labels added since its split (``data.added_labels``: the
    run's added_labels.csv, which `semigen review` writes): set aside what they make stale
    (`rundir.set_aside`), so that the classifier and everything after it train again with them
    as true labels. The self-supervised features saw no label and are kept: continuing costs
    the fine-tuning, not the features."""
    run_path = Path(cfg.run.out)
    saved = read_run_json(run_path, "split.json")
    if saved is None or not is_main_process():
        return
    labels = added.read(cfg.data.added_labels) if cfg.data.added_labels else {}
    if saved.get("added_labels") == (added.fingerprint(labels) if labels else None):
        return
    check_continuation(cfg, MODEL_FIELDS)  # another data set's run is refused, not changed
    with RunDir(run_path) as run_dir:
        before = {image: saved["classes"][c] for image, c in
                  zip(saved.get("labeled", []), saved.get("labeled_labels", []), strict=False)}
        new = sum(image not in before for image in labels)
        corrected = sum(image in before and before[image] != label
                        for image, label in labels.items())
        target = set_aside(run_path)
        run_dir.info(f"{new} labels added, {corrected} corrected ({cfg.data.added_labels}): the "
                     "classifier and what follows it train again with them; the self-supervised "
                     f"features are kept; the earlier results are in {target}")


def open_data(stage: Stage, round_index: int) -> Dataset:
    """The data set, after the checks: this run's split, no unreadable input, unlabeled images
    for semi mode. Round 0 records the data report, the config and the split."""
    cfg, run_dir = stage.cfg, stage.run_dir
    data = load_dataset(cfg.data, progress=stage.show_progress)
    run_split = data.split_record(cfg.data)
    pool_changed = check_split(run_dir.path, run_split)
    if round_index == 0:
        run_dir.note_continuation(stage.changed)
    if pool_changed:
        run_dir.info(pool_changed)
    run_dir.write_json("data_report.json", data.report.to_dict())
    data.report.raise_if_errors()
    if cfg.label.mode == "semi" and not len(data.unlabeled):
        raise DataError(f"{cfg.data.source}: label.mode semi needs unlabeled images "
                        "(DATA/unlabeled/ or CSV rows with an empty label)")
    if round_index == 0:  # a round continues a run whose config and split are written
        run_dir.info(data.report.format())
        run_dir.write_config(cfg)
        run_dir.write_json("split.json", run_split)
    return data


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


def train(cfg: Config, round_index: int = 0, init: Path | None = None,
          synthetic: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Train the classifier of ``cfg.label.mode`` into ``cfg.run.out``; return final metrics.

    Round 0 trains from scratch for ``label.steps``. A joint round starts from the classifier
    checkpoint `init` and mixes the `synthetic` (uint8 N x H x W x C images, class indices) into
    the labeled batches, ``fit.synthetic_ratio`` of them per real labeled image."""
    check_backbone(cfg)
    if round_index == 0:
        take_added_labels(cfg)
    lab = cfg.label
    name = checkpoint.stage_name(STAGE, round_index)
    total_steps, lr = (lab.steps, lab.lr) if round_index == 0 else \
        (cfg.fit.label_steps, cfg.fit.label_lr)
    with open_stage(cfg, name, MODEL_FIELDS) as stage:
        rt, run_dir = stage.rt, stage.run_dir
        data = open_data(stage, round_index)
        images, labels = training_set(data, lab.mode)
        num_classes = len(data.classes)
        architecture = lab.backbone or lab.net
        net_args = nets.arguments(architecture, data.shape, num_classes, lab.width)
        net = nets.build(**net_args).to(rt.device)
        fresh = round_index == 0 and stage.resume_from is None
        if fresh and lab.weights:  # every mode: the baselines start from the same weights
            run_dir.info(nets.load_backbone_weights(net, architecture, lab.weights))

        feature_labels, features, nuisances, class_prior = before_labels(stage, data, net,
                                                                         fresh)
        calibration = None  # the cross-fitted accuracy estimate and temperature
        if fresh and lab.mode != "all-labels" and lab.calibration_steps > 0:
            calibration = calibrate.cross_fit(stage, data, net, features, nuisances,
                                              class_prior)

        # Fine-tuning: resumed, continued from the previous round, or started.
        ema, optimizer, schedule = fine_tuning(net, lab, lr, total_steps)
        levels = initial_levels(num_classes, class_prior)
        start_step, state = resume_or_start(
            stage, {"model": net, "ema": ema, "optimizer": optimizer, "schedule": schedule},
            init, init_objects=("model", "ema"))
        if state is not None:  # the levels, the features' labels and round 0's calibration go on
            with checkpoint.reading(state, "classifier"):
                levels = {k: state["levels"].get(k, levels[k]) for k in levels}
                calibration = state.get("calibration")
                feature_labels = rows_by_path(state.get("feature_labels"),
                                              state.get("feature_label_ids"), data.unlabeled.ids,
                                              run_dir)
                if stage.resume_from is not None:
                    checkpoint.set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
        if (round_index > 0 and stage.resume_from is None and synthetic is not None
                and cfg.fit.feature_step and feature_labels is not None):
            feature_labels = labels_with_generated(stage, data, synthetic)
        levels = {k: v.to(rt.device) for k, v in levels.items()}
        model, optimizer = rt.fabric.setup(net, optimizer)
        ema.to(rt.device)

        streams = 4 * round_index  # each round draws batches of its own
        batches = fine_tuning_batches(stage, data, (images, labels), synthetic, streams,
                                      start_step)
        temperature = calibration["temperature"] if calibration else 1.0
        teacher = feature_labels if lab.second_teacher else None
        nuisance_seed = rt.data_seed(streams + 3)
        # A fixed sample of unlabeled images scores the pseudo-labels during training.
        probe = np.random.default_rng(0).permutation(len(data.unlabeled))[:lab.eval_unlabeled]

        def step(t: int) -> dict:
            nonlocal levels
            loss, parts, levels = step_loss(model, lab, rt, batches, teacher, levels,
                                            nuisances, mix_seed(nuisance_seed, t),
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
                found = evaluate(nets.tempered(ema.module, temperature), data, rt.device, probe)
                run_dir.stats(name, done, **found)

        def checkpoint_state() -> dict:
            # Every rank's RNG is kept, so that each resumes its own stream.
            rng = rt.fabric.all_gather(checkpoint.rng_state()["torch"]).reshape(
                rt.world_size, -1).cpu()
            return payload("classifier", name, lab.mode, net_args, data.classes, data.shape,
                           cfg.to_dict(), model=net.state_dict(), ema=ema.state_dict(),
                           optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                           levels={k: v.cpu() for k, v in levels.items()},
                           feature_labels=feature_labels,
                           feature_label_ids=list(data.unlabeled.ids), calibration=calibration,
                           temperature=temperature, rng=[{"torch": r} for r in rng])

        run_steps(stage, start_step, total_steps, step, f"{name} ({lab.mode})",
                  after_step=after_step, checkpoint_state=checkpoint_state)
        prints = same_weights_on_all_ranks(rt.fabric, net, "classifier")
        return finish(stage, data, nets.tempered(ema.module, temperature), ema.module,
                      round_index, {"weight_fingerprints": prints, "steps": total_steps,
                                    "labeled": len(labels), "calibration": calibration,
                                    "synthetic": 0 if synthetic is None else len(synthetic[1])})


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


def labels_with_generated(stage: Stage, data: Dataset, synthetic: tuple) -> torch.Tensor | None:
    """A joint round's feature step: the unlabeled images' labels spread again over the
    representation's features, from the true labels and the round's generated images as
    labeled points; None (the previous round's labels stay) where the run has no
    representation."""
    rt, run_dir = stage.rt, stage.run_dir
    features = represent.load_representation(run_dir.path, stage.cfg, data, rt.device)
    if features is None:
        return None
    real = nets.embed(features, np.concatenate([data.labeled.images, data.unlabeled.images]),
                      rt.device)
    spread = represent.labels_with_generated(real, nets.embed(features, synthetic[0], rt.device),
                                             data, synthetic[1])
    found = {"feature_step_generated": len(synthetic[1]),
             "features_mean_confidence": spread.max(1).values.mean().item()}
    if data.unlabeled_truth is not None:  # logged, never used to choose anything
        found |= scores(spread, data.unlabeled_truth, "features_pseudo_label")
    run_dir.stats(stage.name, 0, event="feature_step", **found)
    run_dir.info(f"{stage.name}: the features' labels spread again with {len(synthetic[1])} "
                 "generated images as labeled points")
    return spread


def before_labels(stage: Stage, data: Dataset, net, fresh: bool):
    """Semi mode, before any label is used: features learned from every training image
    (`represent`), then their labels. Returns the features' label distribution of each
    unlabeled image and the features (None where none were learned, or on a resume: the
    checkpoint has them), the nuisances the fine-tuning views carry, and the class prior
    (estimated or uniform; None where no labels came from features: uniform)."""
    lab, run_dir = stage.cfg.label, stage.run_dir
    semi = lab.mode == "semi"
    learned = semi and lab.pretrain_steps > 0
    from_features = learned or (semi and bool(lab.weights))
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
            net, data, stage.rt.device, lab.class_prior == "estimate")
        calibrate.record_estimate(stage, represent.STAGE, lab.pretrain_steps, found,
                                  represent.describe_estimate(found, len(data.classes)))
        class_prior = torch.tensor(found["class_prior"])
        if found.get("class_prior_too_few_labels"):
            run_dir.info(f"class shares not estimated: a class has fewer than "
                         f"{prior.LABELS_TO_ESTIMATE} labeled images, too few to check the "
                         "features' labels they would be read from; equal shares assumed")
        if found["class_prior_estimated"]:
            labeled = torch.tensor(found["labeled_prior"])
            run_dir.info(prior.describe(torch.tensor(found["class_prior_estimate"]), labeled,
                                        data.classes)
                         + ("" if not torch.equal(class_prior, labeled) else
                            f"; within {prior.SHIFT_TO_USE:.0%} of the labeled shares: those "
                            "are kept"))
    # After the representation stage, the labeled and strong views also carry the nuisances
    # the features learned to ignore: without them, the few labels teach colour or position
    # back, and the fine-tuned classifier falls below the features' labels.
    nuisances = (contrastive_views(data.shape, data.hflip, data.rotate, colour_views)
                 if from_features else None)
    return feature_labels, features, nuisances, class_prior


def finish(stage: Stage, data: Dataset, classifier, uncalibrated, round_index: int,
           facts: dict) -> dict:
    """Pseudo-labels for every unlabeled image from the final (tempered) EMA classifier, the
    final metrics with the stage's `facts`, and the stage recorded as done."""
    rt, run_dir = stage.rt, stage.run_dir
    prints = facts["weight_fingerprints"]
    probs = predict(classifier, data.unlabeled.images, rt.device)
    final = evaluate(classifier, data, rt.device, np.arange(len(data.unlabeled)), probs)
    if classifier is not uncalibrated and data.test is not None:  # what the temperature changed
        final["test_ece_uncalibrated"] = scores(predict(uncalibrated, data.test.images,
                                                        rt.device), data.test.labels,
                                                "test")["test_ece"]
    metrics = final | {"mode": stage.cfg.label.mode, "steps": facts["steps"],
                       "world_size": rt.world_size, "labeled": facts["labeled"],
                       "unlabeled": len(data.unlabeled), "synthetic": facts["synthetic"]}
    if rt.is_writer:
        write_pseudo_labels(run_dir.path / "pseudo_labels.csv", data.unlabeled.ids, data.classes,
                            probs, round_index)
    run_dir.stats(stage.name, facts["steps"], event="done", weight_fingerprints=prints,
                  **metrics)
    run_dir.update_metrics(stage.name, metrics)
    rt.fabric.barrier()  # the next stage, on every rank, reads what rank 0 just wrote
    run_dir.info(f"{stage.name} done: " + format_metrics(metrics))
    warning = prior.overconfidence(metrics | (facts.get("calibration") or {}))
    if warning and rt.is_writer:
        log.warning(warning[0].upper() + warning[1:])
    return metrics
