"""What every generation backend trains on, and the start and end that their training loops
share: the training set of a mode (real labels, confident pseudo-labels, or all labels),
class-balanced batches that are a function of (seed, step) alone, and the checks and records
around a loop.

Modes: ``semi`` (the real labels plus the pseudo-labels of ``label`` at or above
``generate.min_confidence``), ``labels-only`` (the real labels alone) and ``all-labels`` (every
training image with its true label; built-ins)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..data import DataError, Dataset, StepBatchSampler, load_dataset, to_float
from ..rundir import RunDir, check_split, note_resume
from ..training import same_weights_on_all_ranks
from . import check_backend


def read_pseudo_labels(path: Path, classes: list[str]) -> dict[str, tuple[int, float]]:
    """``id -> (class index, confidence)`` from a pseudo_labels.csv; the latest round wins."""
    index = {c: i for i, c in enumerate(classes)}
    found: dict[str, tuple[int, float, int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row["label"] not in index:
                raise DataError(f"{path} line {line}: label '{row['label']}' is not a class "
                                f"of this run ({', '.join(classes)})")
            rnd = int(row.get("round") or 0)
            if row["path"] not in found or rnd >= found[row["path"]][2]:
                found[row["path"]] = (index[row["label"]], float(row["confidence"]), rnd)
    return {k: (label, conf) for k, (label, conf, _) in found.items()}


def training_set(data: Dataset, mode: str, pseudo: dict[str, tuple[int, float]] | None,
                 min_confidence: float, weight_by_confidence: bool
                 ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(images, labels, sampling weights): each class is drawn equally often; within a class,
    images are equally likely, or in proportion to their confidence (real labels count 1)."""
    images, labels = [data.labeled.images], [data.labeled.labels]
    confidence = [np.ones(len(data.labeled))]
    if mode == "all-labels":
        if data.unlabeled_truth is None:
            raise DataError("generate.mode all-labels needs a built-in data set")
        images.append(data.unlabeled.images)
        labels.append(data.unlabeled_truth)
        confidence.append(np.ones(len(data.unlabeled)))
    elif mode == "semi":
        if pseudo is None:
            raise DataError("generate.mode semi needs pseudo-labels: run `semigen label` first "
                            "(or use --generate.mode labels-only)")
        chosen = [(i, *pseudo[image_id]) for i, image_id in enumerate(data.unlabeled.ids)
                  if image_id in pseudo and pseudo[image_id][1] >= min_confidence]
        if chosen:
            rows, chosen_labels, chosen_conf = map(np.array, zip(*chosen, strict=True))
            images.append(data.unlabeled.images[rows])
            labels.append(chosen_labels.astype(np.int64))
            confidence.append(chosen_conf)
    images, labels, confidence = (np.concatenate(a) for a in (images, labels, confidence))
    counts = np.bincount(labels, minlength=len(data.classes))
    weights = (confidence if weight_by_confidence else np.ones(len(labels))) / counts[labels]
    return images, labels, torch.from_numpy(weights)


def image_batches(images: np.ndarray, labels: np.ndarray, weights: torch.Tensor,
                  batch_size: int, seed: int, start_step: int, device: torch.device):
    """Endless batches (images in [-1, 1], classes) on `device`; batch t is a function of
    (seed, t) alone, drawn by the classifier's sampler. No image has a transform of its own
    (DiffAugment works on whole batches), so a batch is one indexing, not a DataLoader call per
    image."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)  # N C H W, shares memory
    classes = torch.from_numpy(labels)
    for batch in StepBatchSampler(len(labels), batch_size, seed, start_step, weights):
        index = torch.tensor([i for i, _ in batch])
        yield (to_float(pixels[index]).to(device, memory_format=torch.channels_last),
               classes[index].to(device))


def open_training_set(cfg, run: RunDir, rt, stage: str, round_index: int, changed: list[str]
                      ) -> tuple[Dataset, np.ndarray, np.ndarray, torch.Tensor]:
    """The data set and the (images, labels, sampling weights) that `stage` trains on, after
    the checks every backend needs: the run's split is this data's, and every DDP rank read the
    same pseudo-labels. Round 0 records the run's config (a round's config is the fit's)."""
    gen = cfg.generate
    data = load_dataset(cfg.data, progress=rt.is_writer and cfg.run.progress)
    data.report.raise_if_errors()
    check_split(run.path, data.split_record(cfg.data))
    if round_index == 0:
        run.note_continuation(changed)
    pseudo_path = run.path / "pseudo_labels.csv"
    pseudo = read_pseudo_labels(pseudo_path, data.classes) if pseudo_path.exists() else None
    images, labels, weights = training_set(data, gen.mode, pseudo, gen.min_confidence,
                                           gen.weight_by_confidence)
    sizes = rt.fabric.all_gather(torch.tensor(len(labels), device=rt.device)).reshape(-1)
    if len(set(sizes.tolist())) != 1:  # pseudo_labels.csv, written by rank 0, was not ready
        raise RuntimeError(f"ranks read different training sets: {sizes.tolist()} images")
    counts = np.bincount(labels, minlength=len(data.classes)).tolist()
    run.info(f"{stage} ({gen.backend}, {gen.mode}): {len(labels)} training images, per class "
             f"{counts}")
    if round_index == 0:
        run.write_config(cfg)
        if not (run.path / "split.json").exists():  # a generator trained on DATA alone
            run.write_json("split.json", data.split_record(cfg.data))
    return data, images, labels, weights


def finish_training(cfg, run: RunDir, rt, stage: str, net: torch.nn.Module, labels: np.ndarray,
                    num_classes: int, total_steps: int) -> dict:
    """Check that every rank ends with the same weights, then record the stage as done."""
    prints = same_weights_on_all_ranks(rt.fabric, net, "generator")
    counts = np.bincount(labels, minlength=num_classes).tolist()
    metrics = {"backend": cfg.generate.backend, "mode": cfg.generate.mode, "steps": total_steps,
               "training_images": len(labels), "training_images_per_class": counts,
               "world_size": rt.world_size}
    run.stats(stage, total_steps, event="done", weight_fingerprints=prints, **metrics)
    run.update_metrics(stage, metrics)
    run.info(f"{stage} done: {len(labels)} images, {total_steps} steps; grids in "
             f"{run.path / 'samples'}")
    return metrics


def resume_or_start(cfg, run: RunDir, rt, ckpts, stage: str, backend: str,
                    resume_from: Path | None, init: Path | None, objects: dict) -> int:
    """Load `objects` (networks, EMA, optimizers, by their checkpoint entries) from the
    checkpoint to resume (`resume_from`) or, in a joint round, the previous round's (`init`);
    refuse another backend's. Returns the step to start at."""
    start_step = 0
    if resume_from is not None or init is not None:
        state = checkpoint.load(resume_from or init)
        check_backend(state, backend, resume_from or init)
        checkpoint.restore(state, objects)
        if resume_from is not None:
            with checkpoint.reading(state, "generator"):
                start_step = int(state["step"])
            note_resume(run, stage, resume_from, state, cfg)
        else:
            run.info(f"{stage}: starting from {init}")
    if resume_from is None:
        run.rewind(stage, 0)  # lines of an attempt that died before its first checkpoint
    if rt.is_writer:
        ckpts.remove_leftovers()
    return start_step
