"""(1) label: the classifier training loop, readable top to bottom in `train`.

Modes on the same code: ``labels-only`` (the labeled images; the lower baseline) and
``all-labels`` (every training image with its true label; the upper baseline, built-ins only).
The semi-supervised mode is built by issue #3 on this loop."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_accuracy
from tqdm import tqdm

from .. import checkpoint, runtime
from ..config import Config, validate
from ..data import Dataset, ImageSet, StepBatchSampler, Views, load_dataset, to_float, weak
from ..rundir import RunDir, rewind_stats
from . import nets

STAGE = "label"


class NotBuiltYet(RuntimeError):
    """A stage or mode that a later issue builds."""


def training_set(data: Dataset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels the supervised loss sees in `mode`."""
    if mode == "all-labels":
        if data.unlabeled_truth is None:
            raise ValueError("all-labels needs the true labels of the unlabeled images")
        return (np.concatenate([data.labeled.images, data.unlabeled.images]),
                np.concatenate([data.labeled.labels, data.unlabeled_truth]))
    return data.labeled.images, data.labeled.labels


def cosine_lr(total_steps: int):
    """FixMatch's schedule: lr * cos(7 pi t / 16 T), which ends at about 0.2 lr."""
    return lambda step: math.cos(7 * math.pi * step / (16 * total_steps))


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, device, batch_size: int = 512
            ) -> torch.Tensor:
    """Softmax probabilities for uint8 N x H x W x C images, in eval mode, on CPU at the end."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2)).to(device)
        out.append(model(x).float().softmax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def accuracy(model: torch.nn.Module, images: ImageSet, num_classes: int, device) -> float:
    probs = predict(model, images.images, device)
    return multiclass_accuracy(probs.argmax(1), torch.from_numpy(images.labels),
                               num_classes=num_classes, average="micro").item()


def fingerprint(module: torch.nn.Module) -> int:
    """A 62-bit hash of every tensor in the module: equal on two ranks iff their weights are."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 2


def sync_buffers(fabric, module: torch.nn.Module) -> None:
    """Average floating buffers (BatchNorm statistics) over ranks: DDP keeps the parameters
    equal, but each rank's running statistics follow its own batches."""
    if fabric.world_size > 1:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(fabric.all_reduce(buffer, reduce_op="mean"))


def train(cfg: Config) -> dict:
    """Train the classifier of ``cfg.label.mode`` into ``cfg.run.out``; return final metrics."""
    validate(cfg)
    lab = cfg.label
    if lab.mode == "semi":
        raise NotBuiltYet("label.mode semi is built by issue #3; use --label.mode labels-only "
                          "or all-labels")
    rt = runtime.start(cfg.runtime)
    with RunDir(cfg.run.out, writer=rt.is_writer) as run:
        ckpts = checkpoint.Checkpointer(run.checkpoints, cfg.run.keep_last)
        resume_from = ckpts.resume_path(cfg.run.resume)  # refuse before anything is written

        data = load_dataset(cfg.data, progress=rt.is_writer and cfg.run.progress)
        run.write_json("data_report.json", data.report.to_dict())
        data.report.raise_if_errors()
        run.info(data.report.format())
        run.write_config(cfg)
        run.write_json("split.json", data.split_record(cfg.data))

        images, labels = training_set(data, lab.mode)
        num_classes = len(data.classes)
        net = nets.build(lab.net, data.shape[2], num_classes)
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(lab.ema_decay),
                            use_buffers=True)
        optimizer = torch.optim.SGD(net.parameters(), lr=lab.lr, momentum=lab.momentum,
                                    weight_decay=lab.weight_decay, nesterov=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr(lab.steps))
        start_step, best = 0, -1.0
        if resume_from is not None:
            state = checkpoint.load(resume_from)
            net.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start_step, best = state["step"], state["best"]
            checkpoint.set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
            rewind_stats(run, STAGE, start_step)
            run.info(f"resumed from {resume_from} at step {start_step}")
        model, optimizer = rt.fabric.setup(net, optimizer)
        ema.to(rt.device)

        loader = DataLoader(Views(images, labels, [weak(data.shape, data.hflip)]),
                            batch_sampler=StepBatchSampler(len(labels), lab.batch_size,
                                                           rt.data_seed(), start_step),
                            num_workers=cfg.runtime.num_workers)
        batches = iter(rt.fabric.setup_dataloaders(loader, use_distributed_sampler=False))
        metrics = {}
        for step in tqdm(range(start_step, lab.steps), initial=start_step, total=lab.steps,
                         desc=f"label ({lab.mode})", unit="step",
                         disable=not (rt.is_writer and cfg.run.progress)):
            x, y, _ = next(batches)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            rt.fabric.backward(loss)
            optimizer.step()
            schedule.step()
            ema.update_parameters(net)

            done = step + 1
            if done % cfg.run.log_every == 0 or done == lab.steps:
                run.stats(STAGE, done, loss=loss.item(), lr=schedule.get_last_lr()[0])
            evaluating = done % lab.eval_every == 0 or done == lab.steps
            saving = done % cfg.run.checkpoint_every == 0 or done == lab.steps
            if evaluating or saving:
                sync_buffers(rt.fabric, net)
                sync_buffers(rt.fabric, ema.module)
            is_best = False
            if data.test is not None and evaluating:
                metrics["test_accuracy"] = accuracy(ema.module, data.test, num_classes,
                                                    rt.device)
                is_best = metrics["test_accuracy"] > best
                best = max(best, metrics["test_accuracy"])
                run.stats(STAGE, done, test_accuracy=metrics["test_accuracy"])
            if saving:
                # Every rank's RNG is kept, so that each resumes its own stream.
                rng = rt.fabric.all_gather(checkpoint.rng_state()["torch"]).reshape(
                    rt.world_size, -1).cpu()
                if rt.is_writer:
                    ckpts.save({"kind": "classifier", "stage": STAGE, "mode": lab.mode,
                                "net": {"name": lab.net, "in_channels": data.shape[2],
                                        "num_classes": num_classes},
                                "classes": data.classes, "image_shape": list(data.shape),
                                "model": net.state_dict(), "ema": ema.state_dict(),
                                "optimizer": optimizer.state_dict(),
                                "schedule": schedule.state_dict(), "best": best,
                                "rng": [{"torch": r} for r in rng],
                                "config": cfg.to_dict()}, done, is_best)
                rt.fabric.barrier()

        prints = rt.fabric.all_gather(torch.tensor(fingerprint(net), device=rt.device))
        prints = [int(p) for p in prints.reshape(-1).tolist()]
        if len(set(prints)) != 1:
            raise RuntimeError(f"ranks ended with different weights: {prints}")
        metrics |= {"mode": lab.mode, "steps": lab.steps,
                    "best_test_accuracy": best if best >= 0 else None,
                    "world_size": rt.world_size}
        run.stats(STAGE, lab.steps, event="done", weight_fingerprints=prints, **metrics)
        run.write_json("metrics.json", {STAGE: metrics})
        run.info(f"label done: {metrics}")
        return metrics
