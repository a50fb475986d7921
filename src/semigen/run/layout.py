"""Every file of a run directory, by name: the one place that spells them.

    config.yaml        the resolved config        split.json          which images were labeled
    log.txt            the log                    data_report.json    what was read, what skipped
    stats.jsonl        every logged value         metrics.json        each stage's figures
    stages.json        which stages finished      pseudo_labels.csv   path,label,confidence,round
    added_labels.csv   labels added in review     report.html         the report
    checkpoints/<stage>/latest.pt + step files    samples/            per-class grids
    tensorboard/<stage>/                          baselines/<mode>/   runs of the baselines
    earlier/<n>/       what new labels set aside  review/             the review page's caches
    synthetic/         exported images            run.lock            the writer's lock
    evaluator.json     an evaluator run's key     run.json            the run's identity
"""

from __future__ import annotations

import re
from pathlib import Path

from ..checkpoint import LATEST
from ..config import ConfigError


class OutsideRun(ConfigError):
    """A file of a run whose links lead out of the run directory."""


class Entry:
    """A file or folder of every run directory: ``layout.metrics`` is ``RUN/metrics.json``."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, layout: Layout | None, owner=None):
        return self if layout is None else layout.root / self.name


class Layout:
    """The paths of the run directory `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    config = Entry("config.yaml")
    log = Entry("log.txt")
    stats = Entry("stats.jsonl")
    split = Entry("split.json")
    data_report = Entry("data_report.json")
    metrics = Entry("metrics.json")
    stages = Entry("stages.json")
    pseudo_labels = Entry("pseudo_labels.csv")
    added_labels = Entry("added_labels.csv")
    report = Entry("report.html")
    evaluator = Entry("evaluator.json")
    lock = Entry("run.lock")
    identity = Entry("run.json")
    checkpoints = Entry("checkpoints")
    samples = Entry("samples")
    tensorboard = Entry("tensorboard")
    baselines = Entry("baselines")
    earlier = Entry("earlier")
    synthetic = Entry("synthetic")
    review = Entry("review")

    def stage_folder(self, stage: str) -> Path:
        """``checkpoints/<stage>/``: where a stage (``label``, ``generate-r2``) keeps its
        checkpoints."""
        return self.checkpoints / stage

    def checkpoint(self, stage: str) -> Path:
        """``checkpoints/<stage>/latest.pt``: the stage's last checkpoint."""
        return self.stage_folder(stage) / LATEST

    def final_stage(self, stage: str) -> str:
        """The last round of `stage` with a checkpoint: ``label-r2`` after two joint rounds of
        ``semigen fit``, plain ``label`` before any."""
        found = [int(m.group(1)) for p in self.checkpoints.glob(f"{stage}-r*")
                 if (m := re.fullmatch(rf"{re.escape(stage)}-r(\d+)", p.name))
                 and self.checkpoint(p.name).exists()]
        return f"{stage}-r{max(found)}" if found else stage

    def final_checkpoint(self, stage: str) -> Path:
        return self.checkpoint(self.final_stage(stage))

    def baseline(self, mode: str) -> Path:
        return self.baselines / mode

    def sample_grid(self, stage: str, step: int) -> Path:
        return self.samples / f"{stage}-step-{step:08d}.png"

    # `semigen review`'s own files, in RUN/review/
    @property
    def review_skipped(self) -> Path:
        return self.review / "skipped.csv"

    @property
    def review_generated(self) -> Path:
        return self.review / "generated"

    def review_thumbnail(self, key: str) -> Path:
        return self.review / "thumbs" / key[:2] / f"{key}.png"

    def review_predictions(self, key: str) -> Path:
        return self.review / f"predictions-{key}.npz"

    def inside(self, path: str | Path) -> Path:
        """`path`, refused (`OutsideRun`) where following its links leads out of the run
        directory: a run received from someone else may hold a link to /etc/passwd where a
        thumbnail should be, and nothing of the run is read or written through it."""
        path = Path(path)
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise OutsideRun(f"{path}: a link that leads out of the run directory {self.root}; "
                             "not opened (remove it, or copy the run without links)")
        return path

    def is_run(self) -> bool:
        return self.config.is_file() and any(getattr(self, m).exists() for m in MARKERS)

    def own_entry(self, target: Path) -> bool:
        """Whether `target` (resolved) is the run directory or one of its own records."""
        root = self.root.resolve()
        return target == root or (target.is_relative_to(root)
                                  and target.relative_to(root).parts[0] in OWN_ENTRIES)


# What a run directory may hold; anything else means --out points at a folder of the user's.
# The review page's caches are not among the records a command's --out may not touch: review
# samples its generated images into RUN/review/generated/ as `semigen sample` would.
OWN_ENTRIES = {e.name for e in vars(Layout).values() if isinstance(e, Entry)} - {"review"}
# Besides config.yaml, a run directory holds at least one of these; a data folder that
# happens to hold a config.yaml holds none of them.
MARKERS = ("split", "log", "metrics", "checkpoints", "stats")
# What labels added after the split make stale (`continuation.set_aside`); the checkpoints of
# every stage but the kept ones go too: the self-supervised features never saw a label.
STALE_WITH_NEW_LABELS = ("split", "metrics", "stages", "pseudo_labels", "report", "samples",
                         "baselines", "synthetic")
KEPT_WITH_NEW_LABELS = ("represent",)
