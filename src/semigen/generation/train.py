"""(2) generate: the conditional GAN's training loop, readable top to bottom in `train`.

Modes on the same code: ``semi`` (the real labels plus the pseudo-labels of ``label`` at or
above ``generate.min_confidence``), ``labels-only`` (the real labels alone) and ``all-labels``
(every training image with its true label; built-ins). Batches are class-balanced. The EMA
generator samples: per-class grids with fixed seeds go to ``RUN/samples/`` at every checkpoint.

A joint round (``round_index`` >= 1) refines the previous round's networks (``init``) on the
re-estimated pseudo-labels for ``fit.generate_steps`` steps, as its own stage ``generate-r<N>``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import save_image

from .. import checkpoint, runtime
from ..config import Config, validate
from ..data import DataError, Dataset, StepBatchSampler, load_dataset, to_float
from ..labeling.train import ema_update, fingerprint, sync_buffers
from ..rundir import RunDir, check_continuation, check_split, note_resume
from . import losses
from .nets import Discriminator, Generator

STAGE = "generate"


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


@torch.no_grad()
def sample(generator: torch.nn.Module, labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Images in [-1, 1] for `labels`; image i's noise comes from seeds[i] alone, so it is the
    same whatever the batch it is drawn in. The generator should be in eval mode."""
    device = next(generator.parameters()).device
    z = torch.stack([torch.randn(generator.z_dim, generator=torch.Generator().manual_seed(s))
                     for s in seeds]).to(device)
    return generator(z, labels.to(device)).float()


def grid_seeds(per_class: int, num_classes: int) -> list[int]:
    """The fixed seeds of the per-class grids: the same images at every checkpoint."""
    return [runtime.mix_seed(7, c, i) for c in range(num_classes) for i in range(per_class)]


def save_grid(generator: torch.nn.Module, num_classes: int, per_class: int, path: Path) -> None:
    """One row per class, `per_class` images each, fixed seeds."""
    was_training = generator.training
    generator.eval()
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = sample(generator, labels, grid_seeds(per_class, num_classes))
    generator.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=per_class, normalize=True, value_range=(-1, 1), padding=1)


def build_networks(num_classes: int, shape: tuple[int, int, int], z_dim: int, width: int,
                   classify: bool = False):
    """Generator and discriminator (with `classify`, an auxiliary classifier too) in
    channels-last layout, as the classifier (about a quarter faster on a CPU)."""
    nets = (Generator(num_classes, shape, z_dim=z_dim, width=width),
            Discriminator(num_classes, shape, width=width, classify=classify))
    return tuple(net.to(memory_format=torch.channels_last) for net in nets)


def generator_from_checkpoint(state: dict, use_ema: bool = True) -> Generator:
    """The generator of a checkpoint, from the checkpoint alone, in eval mode."""
    with checkpoint.reading(state, "generator"):
        net = Generator(**state["net"]).to(memory_format=torch.channels_last)
        weights = ({k.removeprefix("module."): v for k, v in state["ema"].items()
                    if k.startswith("module.")} if use_ema else state["generator"])
        net.load_state_dict(weights)
    return net.eval()


def train(cfg: Config, round_index: int = 0, init: Path | None = None) -> dict:
    """Train the conditional GAN of ``cfg.generate.mode`` into ``cfg.run.out``; a joint round
    continues from the generator checkpoint `init`."""
    validate(cfg)
    gen = cfg.generate
    stage = checkpoint.stage_name(STAGE, round_index)
    total_steps = gen.steps if round_index == 0 else cfg.fit.generate_steps
    changed = check_continuation(cfg)  # refuse another data set's run before writing
    rt = runtime.start(cfg.runtime)
    with RunDir(cfg.run.out, writer=rt.is_writer) as run:
        ckpts = checkpoint.Checkpointer(run.checkpoints / stage, cfg.run.keep_last)
        resume_from = ckpts.resume_path(cfg.run.resume)

        data = load_dataset(cfg.data, progress=rt.is_writer and cfg.run.progress)
        data.report.raise_if_errors()
        check_split(run.path, data.split_record(cfg.data))
        if round_index == 0:
            run.note_continuation(changed)
        pseudo_path = run.path / "pseudo_labels.csv"
        pseudo = read_pseudo_labels(pseudo_path, data.classes) if pseudo_path.exists() else None
        images, labels, weights = training_set(data, gen.mode, pseudo, gen.min_confidence,
                                               gen.weight_by_confidence)
        counts = np.bincount(labels, minlength=len(data.classes)).tolist()
        sizes = rt.fabric.all_gather(torch.tensor(len(labels), device=rt.device)).reshape(-1)
        if len(set(sizes.tolist())) != 1:  # pseudo_labels.csv, written by rank 0, was not ready
            raise RuntimeError(f"ranks read different training sets: {sizes.tolist()} images")
        run.info(f"{stage} ({gen.mode}): {len(labels)} training images, per class {counts}")
        if round_index == 0:  # the run's config is the last command's (a round's is fit's)
            run.write_config(cfg)
            if not (run.path / "split.json").exists():  # a generator trained on DATA alone
                run.write_json("split.json", data.split_record(cfg.data))

        num_classes = len(data.classes)
        net_args = {"num_classes": num_classes, "image_shape": data.shape,
                    "z_dim": gen.z_dim, "width": gen.width}
        classify = gen.class_loss > 0
        generator, discriminator = build_networks(num_classes, data.shape, gen.z_dim, gen.width,
                                                  classify)
        ema = AveragedModel(generator, multi_avg_fn=ema_update(gen.ema_decay), use_buffers=True)
        opt_g = torch.optim.Adam(generator.parameters(), lr=gen.lr, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=gen.lr, betas=(0.0, 0.999))
        start_step = 0
        if resume_from is not None or init is not None:  # a resume, or a round's start
            state = checkpoint.load(resume_from or init)
            checkpoint.restore(state, {"generator": generator, "discriminator": discriminator,
                                       "ema": ema, "opt_g": opt_g, "opt_d": opt_d})
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
        g_model, opt_g = rt.fabric.setup(generator, opt_g)
        d_model, opt_d = rt.fabric.setup(discriminator, opt_d)
        ema.to(rt.device)
        streams = 4 * round_index  # each round draws batches and noise of its own
        batches = image_batches(images, labels, weights, gen.batch_size,
                                rt.data_seed(streams + 2), start_step, rt.device)

        def augment(x, g):
            return losses.diff_augment(x, g) if gen.diff_augment else x

        for step in runtime.progress(range(start_step, total_steps), initial=start_step,
                                     total=total_steps, desc=f"{stage} ({gen.mode})",
                                     unit="step",
                                     disable=not (rt.is_writer and cfg.run.progress)):
            x, y = next(batches)
            # All of this step's noise comes from (seed, rank, step): resumable exactly.
            g = torch.Generator(rt.device).manual_seed(runtime.mix_seed(rt.data_seed(streams + 3),
                                                                   step))
            z = torch.randn(len(y), gen.z_dim, generator=g, device=rt.device)
            with torch.no_grad():
                fake = g_model(z, y)
            # real and generated images in one pass: half the discriminator's calls
            scores = d_model(augment(torch.cat([x, fake.to(x.dtype)]), g), torch.cat([y, y]))
            scores, logits = scores if classify else (scores, None)
            d_loss = losses.discriminator_hinge(*scores.chunk(2))
            if classify:  # the classifier learns from the real images only
                d_class = losses.class_loss(logits[:len(y)], y)
                d_loss = d_loss + gen.class_loss * d_class
            opt_d.zero_grad(set_to_none=True)
            rt.fabric.backward(d_loss)
            opt_d.step()

            z = torch.randn(len(y), gen.z_dim, generator=g, device=rt.device)
            scores = d_model(augment(g_model(z, y), g), y)
            scores, logits = scores if classify else (scores, None)
            g_loss = losses.generator_hinge(scores)
            if classify:
                g_class = losses.class_loss(logits, y)
                g_loss = g_loss + gen.class_loss * g_class
            opt_g.zero_grad(set_to_none=True)
            rt.fabric.backward(g_loss)
            opt_g.step()
            ema.update_parameters(generator)

            done = step + 1
            if done % cfg.run.log_every == 0 or done == total_steps:
                classes = {"d_class": d_class.item(), "g_class": g_class.item()} if classify \
                    else {}
                run.stats(stage, done, d_loss=d_loss.item(), g_loss=g_loss.item(), **classes)
            if done % gen.sample_every == 0 or done % cfg.run.checkpoint_every == 0 \
                    or done == total_steps:
                sync_buffers(rt.fabric, generator)
                sync_buffers(rt.fabric, discriminator)
                sync_buffers(rt.fabric, ema.module)
                if rt.is_writer:
                    save_grid(ema.module, num_classes, gen.grid_per_class,
                              run.path / "samples" / f"{stage}-step-{done:08d}.png")
            if done % cfg.run.checkpoint_every == 0 or done == total_steps:
                if rt.is_writer:
                    ckpts.save({"kind": "generator", "stage": stage, "mode": gen.mode,
                                "net": net_args, "classes": data.classes,
                                "image_shape": list(data.shape),
                                "generator": generator.state_dict(),
                                "discriminator": discriminator.state_dict(),
                                "ema": ema.state_dict(), "opt_g": opt_g.state_dict(),
                                "opt_d": opt_d.state_dict(), "config": cfg.to_dict()}, done)
                rt.fabric.barrier()

        prints = rt.fabric.all_gather(torch.tensor(fingerprint(generator), device=rt.device))
        prints = [int(p) for p in prints.reshape(-1).tolist()]
        if len(set(prints)) != 1:
            raise RuntimeError(f"ranks ended with different generator weights: {prints}")
        metrics = {"mode": gen.mode, "steps": total_steps, "training_images": len(labels),
                   "training_images_per_class": counts, "world_size": rt.world_size}
        run.stats(stage, total_steps, event="done", weight_fingerprints=prints, **metrics)
        run.update_metrics(stage, metrics)
        run.info(f"{stage} done: {len(labels)} images, {total_steps} steps; grids in "
                 f"{run.path / 'samples'}")
        return metrics
