"""What labels added since a run's split make stale (the classifier, the generator, the
figures) moves to ``RUN/earlier/<n>/``: nothing is deleted, the earlier figures stay readable,
and the stages train again with the new labels."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import Config
from ..data import added
from .layout import KEPT_WITH_NEW_LABELS, STALE_WITH_NEW_LABELS, Layout
from .records import Records, read_json


def set_aside(run_path: str | Path) -> Path:
    """Move what a change of labels makes stale into ``RUN/earlier/<n>/`` (n = 1, 2, ...: nothing
    is deleted, the earlier figures stay readable there) with a copy of stats.jsonl, so that the
    stages train again on the new labels; the self-supervised features' checkpoints stay."""
    layout = Layout(run_path)
    n = 1 + max((int(p.name) for p in layout.earlier.glob("*") if p.name.isdigit()), default=0)
    target = Layout(layout.earlier / str(n))
    target.checkpoints.mkdir(parents=True)
    for entry in STALE_WITH_NEW_LABELS:
        if getattr(layout, entry).exists():
            os.replace(getattr(layout, entry), getattr(target, entry))
    for stage in sorted(layout.checkpoints.glob("*")):
        if stage.name not in KEPT_WITH_NEW_LABELS:
            os.replace(stage, target.stage_folder(stage.name))
    if layout.stats.is_file():
        shutil.copy2(layout.stats, target.stats)
    return target.root


def take_added_labels(cfg: Config, records: Records) -> None:
    """Before a run continues with labels added since its split (``data.added_labels``): set
    aside what they make stale (`continuation.set_aside`), so that the classifier and
    everything after it train again with them as true labels. The self-supervised features saw
    no label and are kept: continuing costs the fine-tuning, not the features."""
    layout = Layout(cfg.run.out)
    saved = read_json(layout.split)
    if saved is None:
        return
    labels = added.read(cfg.data.added_labels) if cfg.data.added_labels else {}
    if saved.get("added_labels") == (added.fingerprint(labels) if labels else None):
        return
    before = {image: saved["classes"][c] for image, c in
              zip(saved.get("labeled", []), saved.get("labeled_labels", []), strict=False)}
    new = sum(image not in before for image in labels)
    corrected = sum(image in before and before[image] != label
                    for image, label in labels.items())
    target = set_aside(layout.root)
    records.info(f"{new} labels added, {corrected} corrected ({cfg.data.added_labels}): the "
                 "classifier and what follows it train again with them; the self-supervised "
                 f"features are kept; the earlier results are in {target}")
