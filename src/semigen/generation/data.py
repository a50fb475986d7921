"""What every generation backend trains on, and the start and end that their training loops
share: the training set of a mode (real labels, confident pseudo-labels, or all labels),
class-balanced batches that are a function of (seed, step) alone, and the checks and records
before and after the loop.

Modes: ``semi`` (the real labels plus the pseudo-labels of ``label`` at or above
``generate.min_confidence``, and at least the ``generate.class_floor`` most confident share of
each class's), ``labels-only`` (the real labels alone) and ``all-labels`` (every
training image with its true label; built-ins)."""

from __future__ import annotations

import numpy as np
import torch

from ..data import DataError, Dataset, StepBatchSampler, to_float
from ..stage import Stage
from ..training import same_weights_on_all_ranks


def training_set(data: Dataset, mode: str, pseudo: dict[str, tuple[int, float]] | None,
                 min_confidence: float, weight_by_confidence: bool, class_floor: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(images, labels, sampling weights): each class is drawn equally often; within a class,
    images are equally likely, or in proportion to their confidence (real labels count 1). In
    ``semi`` mode see `confident`."""
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
        chosen = confident([(i, *pseudo[image_id]) for i, image_id
                            in enumerate(data.unlabeled.ids) if image_id in pseudo],
                           min_confidence, class_floor)
        if chosen:
            rows, chosen_labels, chosen_conf = map(np.array, zip(*chosen, strict=True))
            images.append(data.unlabeled.images[rows])
            labels.append(chosen_labels.astype(np.int64))
            confidence.append(chosen_conf)
    images, labels, confidence = (np.concatenate(a) for a in (images, labels, confidence))
    counts = np.bincount(labels, minlength=len(data.classes))
    weights = (confidence if weight_by_confidence else np.ones(len(labels))) / counts[labels]
    return images, labels, torch.from_numpy(weights)


def confident(rows: list[tuple[int, int, float]], min_confidence: float, class_floor: float
              ) -> list[tuple[int, int, float]]:
    """The (row, label, confidence) pseudo-labels a generator learns from: those at
    `min_confidence` or above, and in every class at least its `class_floor` share of the
    images given that class, the most confident first. A fixed bar alone starves the classes
    the classifier is least sure of (at few labels, a class of thousands of images learned from
    a few dozen), and those are the classes whose variety a generator then cannot learn."""
    by_class: dict[int, list[tuple[int, int, float]]] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    kept = []
    for members in by_class.values():
        members.sort(key=lambda row: -row[2])
        floor = int(np.ceil(class_floor * len(members)))
        kept += [row for rank, row in enumerate(members)
                 if rank < floor or row[2] >= min_confidence]
    return sorted(kept)


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


def open_training_set(stage: Stage, round_index: int
                      ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The (images, labels, sampling weights) that `stage` trains on; every DDP rank must have
    read the same pseudo-labels. Round 0 records the run's config (a round's config is the
    fit's)."""
    run, rt, gen = stage.run, stage.rt, stage.cfg.generate
    images, labels, weights = training_set(run.data, gen.mode, run.pseudo_labels(),
                                           gen.min_confidence, gen.weight_by_confidence,
                                           gen.class_floor)
    sizes = rt.fabric.all_gather(torch.tensor(len(labels), device=rt.device)).reshape(-1)
    if len(set(sizes.tolist())) != 1:  # pseudo_labels.csv, written by rank 0, was not ready
        raise RuntimeError(f"ranks read different training sets: {sizes.tolist()} images")
    counts = np.bincount(labels, minlength=len(run.data.classes)).tolist()
    stage.records.info(f"{stage.name} ({gen.backend}, {gen.mode}): {len(labels)} training "
                       f"images, per class {counts}")
    if round_index == 0:
        run.write_config()
        run.write_split(only_if_missing=True)  # a generator trained on DATA alone
    return images, labels, weights


def finish_training(stage: Stage, net: torch.nn.Module, labels: np.ndarray, num_classes: int,
                    total_steps: int) -> dict:
    """Check that every rank ends with the same weights, then record the stage as done."""
    cfg, run_dir = stage.cfg, stage.records
    prints = same_weights_on_all_ranks(stage.rt.fabric, net, "generator")
    counts = np.bincount(labels, minlength=num_classes).tolist()
    metrics = {"backend": cfg.generate.backend, "mode": cfg.generate.mode, "steps": total_steps,
               "training_images": len(labels), "training_images_per_class": counts,
               "world_size": stage.rt.world_size}
    run_dir.stats(stage.name, total_steps, event="done", weight_fingerprints=prints, **metrics)
    run_dir.update_metrics(stage.name, metrics)
    stage.finished()
    run_dir.info(f"{stage.name} done: {len(labels)} images, {total_steps} steps; grids in "
                 f"{stage.run.layout.samples}")
    return metrics
