"""`semigen sample RUN --per-class N --out DIR --seed S`: images of every class as PNG files.

Writes ``DIR/<class>/<class>-00000.png ...`` and ``DIR/manifest.csv`` (path, class, seed,
checkpoint, and a diffusion model's guidance and solver steps). Image i of class c comes from
seed ``mix_seed(S, c, i)`` alone, so it is the same whatever the batch size, and the
checkpoint's SHA-256 says which weights made it."""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import cv2
import torch

from .. import checkpoint
from ..config import ConfigError
from ..data import class_folders, to_uint8
from ..runtime import mix_seed, pick_accelerator, progress
from . import BACKENDS, STAGE, backend_of, from_checkpoint, sample

log = logging.getLogger("semigen")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sampling(per_class: int, batch_size: int, guidance: float | None,
                   sample_steps: int | None) -> None:
    """Refuse sampling settings that cannot work, naming the option."""
    if per_class < 1 or batch_size < 1:
        raise ConfigError("--per-class and --batch-size must be >= 1")
    if guidance is not None and guidance < 0:
        raise ConfigError(f"--generate.guidance must be >= 0 (got {guidance})")
    if sample_steps is not None and not 1 <= sample_steps <= 1000:
        raise ConfigError(f"--generate.sample_steps must be in [1, 1000] (got {sample_steps})")


def sample_to_folder(run_path: str | Path, per_class: int, out: str | Path, seed: int = 0,
                     batch_size: int = 256, which: str = "latest", device: str = "auto",
                     guidance: float | None = None, sample_steps: int | None = None) -> dict:
    """`per_class` images of every class from a run's generator (a diffusion model with
    `guidance` and `sample_steps`, None: those it was trained with) into `out`."""
    path, state = checkpoint.load_stage(run_path, STAGE, which, "generator")
    accelerator = pick_accelerator(device)
    generator = from_checkpoint(state, guidance=guidance, sample_steps=sample_steps).to(
        accelerator)
    digest = file_sha256(path)
    # what besides the weights and the seed decides an image (a diffusion model's guidance)
    sampling = {k: v for k, v in generator.settings().items()
                if k in BACKENDS[backend_of(state)].SAMPLING_FIELDS}
    out = Path(out)
    rows = []
    jobs = [(c, i) for c in range(len(state["classes"])) for i in range(per_class)]
    folders = class_folders(state["classes"])  # distinct even where class names map alike
    for start in progress(range(0, len(jobs), batch_size), desc="sampling", unit="batch"):
        batch = jobs[start:start + batch_size]
        seeds = [mix_seed(seed, c, i) for c, i in batch]
        images = to_uint8(sample(generator, torch.tensor([c for c, _ in batch]), seeds))
        for (c, i), s, image in zip(batch, seeds, images.cpu(), strict=True):
            name = state["classes"][c]
            rel = Path(folders[c]) / f"{folders[c]}-{i:05d}.png"
            (out / rel.parent).mkdir(parents=True, exist_ok=True)
            pixels = image.permute(1, 2, 0).numpy()
            if pixels.shape[2] == 3:
                pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(out / rel), pixels):
                raise OSError(f"could not write {out / rel}")
            rows.append([rel.as_posix(), name, s, digest, *sampling.values()])
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "seed", "checkpoint_sha256", *sampling])
        writer.writerows(rows)
    log.info(f"wrote {len(rows)} images ({per_class} per class) and manifest.csv to {out}")
    return {"images": len(rows), "checkpoint": str(path), "checkpoint_sha256": digest,
            **generator.settings()}
