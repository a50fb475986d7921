"""The run, opened once: `open_run` validates the config, refuses to continue another run's
directory, takes the writer's lock, applies the labels added since the split, loads the data and
checks the split, then hands the open `Run` to the stages, which read ``run.data`` and write
through ``run.records`` and ``run.layout``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..config import Config, make_config, validate
from ..data import Dataset, load_dataset
from . import earlier
from .continuation import changed_fields, check_continuation, check_split
from .layout import Layout
from .pseudo_labels import read_pseudo_labels, write_pseudo_labels
from .records import Records, read_metrics, read_stages, run_id


class Run:
    """An open run: its config, its files (`layout`), its records and its data, loaded once."""

    def __init__(self, cfg: Config, records: Records, data: Dataset):
        self.cfg = cfg
        self.layout = Layout(cfg.run.out)
        self.records = records
        self.data = data
        self._changes_noted = False
        # A run written before stages.json existed (a stage finished, none recorded): its
        # metrics.json says what finished.
        self._before_stages = not self.layout.stages.exists() and bool(
            {"label", "generate"} & read_metrics(self.path).keys())

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def writer(self) -> bool:
        return self.records.writer

    def note_changes(self) -> None:
        """Log, once, the config fields that changed since the run's config.yaml."""
        if not self._changes_noted:
            self._changes_noted = True
            self.records.note_continuation(changed_fields(self.cfg))

    def write_config(self) -> None:
        self.records.write_config(self.cfg)

    def write_split(self, only_if_missing: bool = False) -> None:
        """split.json: which images were labeled (a generator trained on DATA alone writes it
        only where no label stage has)."""
        if not (only_if_missing and self.layout.split.exists()):
            self.records.write_json(self.layout.split, self.data.split_record(self.cfg.data))

    @property
    def run_id(self) -> str | None:
        return run_id(self.path)

    def metrics(self) -> dict:
        return read_metrics(self.path)

    def finished_stages(self) -> dict:
        """stages.json: each finished stage's wall time. A run written before stages.json
        existed counts every entry of its metrics.json as finished, as it did then."""
        if self._before_stages and not self.layout.stages.exists():
            metrics = read_metrics(self.path)
            seconds = metrics.get("seconds", {})
            return {name: {"seconds": seconds.get(name)} for name in metrics
                    if name != "seconds"}
        return read_stages(self.path)

    def finished(self, stage: str) -> bool:
        return stage in self.finished_stages()

    def mark_finished(self, stage: str, seconds: float) -> None:
        if self.writer and self._before_stages and not self.layout.stages.exists():
            for name, entry in self.finished_stages().items():  # carried over, once
                self.records.mark_finished(name, entry.get("seconds") or 0.0)
        self.records.mark_finished(stage, seconds)

    def pseudo_labels(self) -> dict[str, tuple[int, float]] | None:
        """``id -> (class, confidence)`` of the run's pseudo_labels.csv; None before any."""
        path = self.layout.pseudo_labels
        return read_pseudo_labels(path, self.data.classes) if path.exists() else None

    def write_pseudo_labels(self, probs, round_index: int) -> None:
        if self.writer:
            write_pseudo_labels(self.layout.pseudo_labels, self.data.unlabeled.ids,
                                self.data.classes, probs, round_index)

    def part(self, cfg: Config, model_fields: dict[str, tuple[str, ...]] | None = None
             ) -> AbstractContextManager[Run]:
        """A run of its own that belongs to this one (a baseline inside it) on the same data:
        opened without reading the images again."""
        return open_run(cfg, model_fields, data=self.data if cfg.data == self.cfg.data else None)


@contextmanager
def open_run(cfg: Config, model_fields: dict[str, tuple[str, ...]] | None = None, *,
             take_added_labels: bool = False, data: Dataset | None = None,
             writing: bool = True) -> Iterator[Run]:
    """Open the run in ``cfg.run.out``. Everything that can refuse (the config, a directory of
    another run, data or model by `model_fields`, unreadable input, a changed split) refuses
    before a stage writes. `take_added_labels`: labels added since the split make the stages
    train again (label, fit); elsewhere they are refused until the classifier has retrained.
    `data`: the data set, when a run this one belongs to has loaded it. `writing` False: read
    the run without its lock (another process writes it); nothing is stored."""
    from ..runtime import is_main_process  # torch: only where a run is opened, not read

    cfg = with_added_labels(cfg)
    validate(cfg)
    check_continuation(cfg, model_fields)
    writer = writing and is_main_process()
    with Records(cfg.run.out, writer=writer) as records:
        if take_added_labels and writer:
            earlier.take_added_labels(cfg, records)
        if data is None:
            data = load_dataset(cfg.data, progress=writer and cfg.run.progress)
        records.write_json(records.layout.data_report, data.report.to_dict())
        data.report.raise_if_errors()
        pool_changed = check_split(cfg.run.out, data.split_record(cfg.data))
        if pool_changed:
            records.info(pool_changed)
        yield Run(cfg, records, data)


def with_added_labels(cfg: Config) -> Config:
    """`cfg` reading the run's own added_labels.csv (`semigen review` writes it), as an
    absolute path, when it names none."""
    own = Layout(cfg.run.out).added_labels
    if cfg.data.added_labels is None and own.is_file():
        cfg.data.added_labels = str(own.resolve())
    return cfg


def run_config(run_path: str | Path, **options) -> Config:
    """The config of the run in `run_path` (its config.yaml, with its added labels), with
    `options` (as `make_config` takes them) over it."""
    return with_added_labels(make_config(out=str(run_path), base=Layout(run_path).config,
                                         **options))
