"""`semigen predict RUN IMAGES --out F.csv`: label new images with a run's trained classifier."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from .. import checkpoint
from ..data import read_images
from ..runtime import pick_accelerator
from . import nets
from .train import predict

log = logging.getLogger("semigen")


def predict_images(run: str | Path, images: str | Path, out: str | Path,
                   which: str = "latest", device: str = "auto") -> dict:
    """Write ``path,label,confidence`` for every readable image under `images`; skipped files
    are listed in the log. `which` is latest, best, or a checkpoint path. Returns counts."""
    path, state = checkpoint.load_stage(run, "label", which, "classifier")
    model = nets.from_checkpoint(state)
    found, skipped = read_images(images, tuple(state["image_shape"]), progress=True)
    for rel, why in skipped:
        log.warning(f"skipped {rel}: {why}")
    accelerator = pick_accelerator(device)
    probs = predict(model.to(accelerator), found.images, accelerator)
    confidence, labels = probs.max(dim=1) if len(found) else (probs, probs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence"])
        for rel, label, conf in zip(found.ids, labels.tolist(), confidence.tolist(),
                                    strict=True):
            writer.writerow([rel, state["classes"][label], f"{conf:.4f}"])
    log.info(f"predicted {len(found)} images with {path} into {out}"
             + (f"; skipped {len(skipped)} (listed above)" if skipped else ""))
    return {"predicted": len(found), "skipped": len(skipped), "checkpoint": str(path)}
