"""Devices, precision, distributed data-parallel and seeding, through Lightning Fabric.

``start(cfg)`` returns a `Runtime` whose rank 0 alone writes files. More than one device runs DDP:
Fabric launches the extra processes itself, or picks up torchrun's environment
(``torchrun --nproc-per-node 2 -m semigen ...``)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from .config import ConfigError, RuntimeConfig

if TYPE_CHECKING:  # Lightning is imported when a stage starts: the tools that only read a
    from lightning.fabric import Fabric  # run (review, predict, report) stay 300 MB lighter

PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
# Fabric's all_gather goes through a torch function that torch >= 2.10 calls deprecated; the
# warning, once per stage and rank, tells a user nothing they can act on.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather")


def use_threads(threads: int) -> int:
    """Set the CPU threads of torch and OpenCV: `threads`, or with 0 OMP_NUM_THREADS where it is
    set, else torch's default (one per core). Returns the count in use. Two runs on one machine
    should share its cores (e.g. --runtime.threads 1 each on two cores) instead of each taking
    them all."""
    if threads == 0 and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads > 0:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    return torch.get_num_threads()


def pick_accelerator(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is cuda, but no CUDA GPU is visible "
                          "(use --device auto or cpu)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("runtime.device is mps, but MPS is not available here")
    return device


def is_main_process() -> bool:
    """The only process, or rank 0 of a DDP run: the one that writes what the ranks share."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    # before DDP starts: the rank that torchrun, or Fabric for its own processes, gave this one
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK"))


def leave_process_group() -> None:
    """Close this rank's DDP process group. A rank that is done while rank 0 still works (a
    fit's other ranks, once training ends) would otherwise tear its communication threads down
    at interpreter exit, which can abort the process and, with it, the whole launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def mix_seed(*parts: int) -> int:
    """One well-spread 63-bit seed from several integers (seed, rank, step, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Runtime:
    fabric: Fabric
    seed: int

    @property
    def rank(self) -> int:
        return self.fabric.global_rank

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def is_writer(self) -> bool:
        return self.fabric.is_global_zero

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    def data_seed(self, stream: int = 0) -> int:
        """Seed for this rank's data stream `stream`: ranks draw different batches."""
        return mix_seed(self.seed, self.rank, stream)


def start(cfg: RuntimeConfig) -> Runtime:
    """Choose the device and precision, launch the DDP processes, seed model init alike on
    every rank (DDP also broadcasts rank 0's weights)."""
    use_threads(cfg.threads)
    accelerator = pick_accelerator(cfg.device)
    if accelerator == "cpu" and cfg.precision == "fp16":
        raise ConfigError("runtime.precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    devices, num_nodes = cfg.devices, 1
    if "LOCAL_WORLD_SIZE" in os.environ:  # launched by torchrun: follow its process layout
        devices = int(os.environ["LOCAL_WORLD_SIZE"])
        num_nodes = int(os.environ.get("WORLD_SIZE", devices)) // devices
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    from lightning.fabric import Fabric

    with warnings.catch_warnings():  # Fabric's notes on CPU DDP and tensor cores are noise here
        warnings.simplefilter("ignore")
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        strategy=strategy, precision=PRECISION[cfg.precision])
        fabric.launch()
    torch.manual_seed(cfg.seed)
    return Runtime(fabric, cfg.seed)
