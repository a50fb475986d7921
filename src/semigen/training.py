"""Training helpers that both learning stages use. Labeling (module 1) and generation
(module 2) stand side by side on this module; neither imports the other.

EMA with warm-up, DDP buffer averaging, the weights' fingerprint that proves ranks agree, and
the layout of a model checkpoint's payload."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(step: int, decay: float) -> float:
    """EMA warm-up (Mean Teacher): early on, the average follows the model closely instead of
    carrying the random initial weights for a thousand steps."""
    return min(decay, (1 + step) / (10 + step))


def ema_update(decay: float):
    """`AveragedModel`'s update with warm-up; integer buffers are copied."""
    @torch.no_grad()
    def update(averaged: list, current: list, num_averaged) -> None:
        d = ema_decay_at(int(num_averaged), decay)
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, 1 - d)
            else:
                a.copy_(c)
    return update


def make_ema(module: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of `module`'s parameters and buffers, with warm-up."""
    return AveragedModel(module, multi_avg_fn=ema_update(decay), use_buffers=True)


def ema_weights(ema_state: dict) -> dict:
    """The averaged network's own state dict, from an `AveragedModel`'s."""
    return {k.removeprefix("module."): v for k, v in ema_state.items()
            if k.startswith("module.")}


def fingerprint(module: torch.nn.Module) -> int:
    """A 62-bit hash of every tensor in the module: equal on two ranks iff their weights are."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 2


def same_weights_on_all_ranks(fabric, module: torch.nn.Module, what: str) -> list[int]:
    """Every rank's fingerprint of `module`; raises if they differ (DDP went out of step)."""
    prints = fabric.all_gather(torch.tensor(fingerprint(module), device=fabric.device))
    prints = [int(p) for p in prints.reshape(-1).tolist()]
    if len(set(prints)) != 1:
        raise RuntimeError(f"ranks ended with different {what} weights: {prints}")
    return prints


def sync_buffers(fabric, module: torch.nn.Module) -> None:
    """Average floating buffers (BatchNorm statistics) over ranks: DDP keeps the parameters
    equal, but each rank's running statistics follow its own batches."""
    if fabric.world_size > 1:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(fabric.all_reduce(buffer, reduce_op="mean"))


def payload(kind: str, stage: str, mode: str, net: dict, classes: list[str],
            image_shape, config: dict, **state) -> dict:
    """A checkpoint's contents: what it holds (`kind`: classifier or generator), the stage and
    mode that trained it, the arguments that rebuild its network (`net`), the classes and image
    shape, the run's config, and `state`: the tensors and counters of the stage's training."""
    return {"kind": kind, "stage": stage, "mode": mode, "net": net, "classes": list(classes),
            "image_shape": list(image_shape), "config": config, **state}


@dataclass
class Trainable:
    """What a training stage builds before it resumes: the arguments that rebuild its network
    from a checkpoint (`net_args`), and the objects a checkpoint holds (networks, EMA,
    optimizers), by their checkpoint entries."""
    net_args: dict
    objects: dict

    def state(self) -> dict:
        return {name: obj.state_dict() for name, obj in self.objects.items()}
