"""`semigen sample RUN --per-class N --out DIR --seed S`: images of every class as PNG files.

Writes ``DIR/<class>/<class>-00000.png ...`` and ``DIR/manifest.csv`` (path, class, seed,
checkpoint, and a diffusion model's guidance and solver steps). Image i of class c comes from
seed ``mix_seed(S, c, i)`` alone, so it is the same whatever the batch size, and the
checkpoint's SHA-256 says which weights made it."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import torch

from ..config import MAX_PER_CLASS, ConfigError, load_yaml
from ..data import class_folders, to_uint8
from ..data.cells import safe_row
from ..data.images import png_bytes
from ..files import file_sha256
from ..progress import progress
from ..run import Layout, check_output, filling, load_stage, replacing, run_config
from ..runtime import mix_seed, pick_accelerator
from . import BACKENDS, STAGE, backend_of, from_checkpoint, sample

log = logging.getLogger("semigen")



def check_sampling(run_path: str | Path, per_class: int, batch_size: int,
                   guidance: float | None, sample_steps: int | None) -> None:
    """Refuse sampling settings that cannot work, naming the option: the counts within the
    limits every command keeps (`check_per_class`), the generator's settings checked as the
    run's config checks them (finite, in range) and only for a backend that has them."""
    check_per_class(per_class, "--per-class")
    if batch_size < 1 or batch_size > 65536:
        raise ConfigError(f"--batch-size {batch_size}: give 1-65536")
    given = {name: value for name, value in (("guidance", guidance),
                                             ("sample_steps", sample_steps)) if value is not None}
    if not given:
        return
    cfg = run_config(run_path, **{f"generate.{k}": v for k, v in given.items()})
    unused = [k for k in given if k not in BACKENDS[cfg.generate.backend].SAMPLING_FIELDS]
    if unused:
        raise ConfigError(f"--generate.{unused[0]}: {run_path}'s generator is a "
                          f"{cfg.generate.backend}, which has no such setting (the diffusion "
                          "backend's)")


def check_per_class(per_class: int, option: str, low: int = 1) -> None:
    """Generated images per class, as every command that writes them takes the number: from
    `low` to MAX_PER_CLASS (more is sampled again with another seed)."""
    if not low <= per_class <= MAX_PER_CLASS:
        raise ConfigError(f"{option} {per_class}: give {low}-{MAX_PER_CLASS:,} images per class "
                          "(sample again with another --seed for more)")


def check_disk_space(out: Path, images: int, shape: tuple[int, int, int]) -> int:
    """The bytes `images` PNG files of `shape` may take (uncompressed, a bound); refuse if the
    disk under `out` has less free."""
    need = images * (shape[0] * shape[1] * shape[2] + 200)
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:
        raise ConfigError(f"sample would write {images:,} images, up to {need / 1e9:.2f} GB, "
                          f"and {existing} has {free / 1e9:.2f} GB free; ask for fewer "
                          "(--per-class) or choose another --out")
    return need


def sample_to_folder(run_path: str | Path, per_class: int, out: str | Path, seed: int = 0,
                     batch_size: int = 256, which: str = "latest", device: str = "auto",
                     guidance: float | None = None, sample_steps: int | None = None,
                     overwrite: bool = False) -> dict:
    """`per_class` images of every class from a run's generator (a diffusion model with
    `guidance` and `sample_steps`, None: those it was trained with) into `out`, a new or empty
    folder (or any, with `overwrite`). Streams: memory does not grow with `per_class`; the
    manifest is written as the images are; the folder appears whole when they are all written
    (`filling`: a second command writing the same folder is refused)."""
    out = check_output(out, run_path, overwrite, folder=True,
                       data_source=run_data_source(run_path))
    path, state = load_stage(run_path, STAGE, which, "generator")
    classes = state["classes"]
    total = per_class * len(classes)
    need = check_disk_space(out, total, tuple(state["image_shape"]))
    log.info(f"sampling {total:,} images ({per_class} per class) into {out}, up to "
             f"{need / 1e6:,.1f} MB")
    accelerator = pick_accelerator(device)
    generator = from_checkpoint(state, guidance=guidance, sample_steps=sample_steps).to(
        accelerator)
    digest = file_sha256(path)
    # what besides the weights and the seed decides an image (a diffusion model's guidance)
    sampling = {k: v for k, v in generator.settings().items()
                if k in BACKENDS[backend_of(state)].SAMPLING_FIELDS}
    folders = class_folders(classes)  # distinct even where class names map alike
    with filling(out, overwrite) as work, replacing(work / "manifest.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "seed", "checkpoint_sha256", *sampling])
        for start in progress(range(0, total, batch_size), desc="sampling", unit="batch"):
            batch = [divmod(j, per_class) for j in range(start, min(start + batch_size, total))]
            seeds = [mix_seed(seed, c, i) for c, i in batch]
            images = to_uint8(sample(generator, torch.tensor([c for c, _ in batch]), seeds))
            for (c, i), s, image in zip(batch, seeds, images.cpu(), strict=True):
                rel = Path(folders[c]) / f"{folders[c]}-{i:05d}.png"
                write_png(work / rel, image.permute(1, 2, 0).numpy())
                writer.writerow(safe_row([rel.as_posix(), classes[c], s, digest,
                                          *sampling.values()]))
    log.info(f"wrote {total} images ({per_class} per class) and manifest.csv to {out}")
    return {"images": total, "checkpoint": str(path), "checkpoint_sha256": digest,
            **generator.settings()}


def write_png(path: Path, pixels) -> None:
    """An RGB or grey uint8 H x W x C array as a PNG, written beside and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes(pixels)
    with replacing(path, "wb") as f:
        f.write(data)


def run_data_source(run_path: str | Path) -> str | None:
    """The data folder a run was trained on (its config.yaml), if it names one."""
    try:
        return load_yaml(Layout(run_path).config).get("data", {}).get("source")
    except (ConfigError, AttributeError):
        return None
