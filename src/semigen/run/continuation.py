"""Continuing a run: the same data, split and model as its records say, or a clear refusal
naming what differs."""

from __future__ import annotations

from pathlib import Path

from ..config import BUILTINS, Config, ConfigError, differences, load_run_config
from .layout import OWN_ENTRIES, Layout
from .records import read_json

# Fields that say what a run's data is. A command that continues a run must agree with its
# config.yaml on these, and on its model's fields (each stage names its own) once that stage has
# checkpoints; step budgets, logging, devices and evaluation may change.
DATA_FIELDS = ("source", "labels_csv", "labels_per_class", "split_seed", "image_size",
               "max_side", "channels")


def check_continuation(cfg: Config, model_fields: dict[str, tuple[str, ...]] | None = None
                       ) -> list[str]:
    """Before anything is written: refuse to continue the run in ``cfg.run.out`` with another
    data source, split, image shape or model (`model_fields`: section -> the fields that decide
    its model, checked once ``checkpoints/<section>/`` exists), naming what differs; refuse an
    --out that is a folder of other files. Returns every config field that changed
    (``field: old -> new``), for the log."""
    out, layout = Path(cfg.run.out), Layout(cfg.run.out)
    if not out.exists():
        return []
    if not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a run directory; choose another --out")
    if not layout.config.is_file():
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in OWN_ENTRIES and not p.name.endswith(".tmp"))
        if foreign:
            raise ConfigError(f"--out {out}: holds other files ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}) and no semigen run; "
                              "choose a new or empty folder")
        return []
    saved = load_run_config(layout.config)
    conflicts = [f"data.{name}: {getattr(saved.data, name)!r} -> {getattr(cfg.data, name)!r}"
                 for name in DATA_FIELDS
                 if not _same_data_value(name, getattr(saved.data, name),
                                         getattr(cfg.data, name))]
    for section, names in (model_fields or {}).items():
        if layout.stage_folder(section).is_dir():
            conflicts += [f"{section}.{name}: {getattr(getattr(saved, section), name)!r} -> "
                          f"{getattr(getattr(cfg, section), name)!r}" for name in names
                          if getattr(getattr(saved, section), name)
                          != getattr(getattr(cfg, section), name)]
    if conflicts:
        raise ConfigError(
            f"{out} holds a run of other data or another model, which this command would "
            "break:\n  " + "\n  ".join(conflicts) + "\nStart a new run with another --out (or "
            f"delete {out}); only step budgets, logging, devices and evaluation may change "
            "when a run continues")
    return changed_fields(cfg)


def changed_fields(cfg: Config) -> list[str]:
    """Every config field that differs from the run's config.yaml (``field: old -> new``)."""
    layout = Layout(cfg.run.out)
    if not layout.config.is_file():
        return []
    ignored = {"run.out", "run.resume"}
    return [d for d in differences(load_run_config(layout.config).to_dict(), cfg.to_dict())
            if d.split(":")[0] not in ignored]


def _same_data_value(name: str, old, new) -> bool:
    if old == new or name not in ("source", "labels_csv") or old is None or new is None:
        return old == new
    if old in BUILTINS or new in BUILTINS:
        return False
    return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()


def check_split(run_path: str | Path, record: dict) -> str | None:
    """Refuse to continue a run whose data now gives another split than its split.json
    (classes, which images are labeled, their labels): the folder's files changed. A grown or
    shrunk unlabeled pool is allowed (per-image state is found by path); returns a sentence
    saying so for the log, else None."""
    layout = Layout(run_path)
    saved = read_json(layout.split)
    if saved is None:
        return None
    if saved.get("added_labels") != record.get("added_labels"):
        raise ConfigError(
            f"{run_path}: labels were added since its classifier was trained "
            f"({layout.added_labels}, or data.added_labels): run `semigen label "
            f"{run_path}` (or `semigen fit {run_path}`) first, which trains the classifier on "
            "them, then this command")
    problems = []
    if saved.get("classes") != record["classes"]:
        problems.append(f"classes: {', '.join(map(str, saved.get('classes') or []))} -> "
                        f"{', '.join(record['classes'])}")
    try:
        before = dict(zip(saved.get("labeled", []), saved.get("labeled_labels", []),
                          strict=True))
    except (TypeError, ValueError):
        raise ConfigError(f"{layout.split}: damaged (its labeled images and labels do not pair "
                          "up); restore it from a copy, or start a new run with another "
                          "--out") from None
    now = dict(zip(record["labeled"], record["labeled_labels"], strict=True))
    if before != now:
        added, removed = now.keys() - before.keys(), before.keys() - now.keys()
        relabeled = [k for k in now.keys() & before.keys() if now[k] != before[k]]
        problems.append(f"labeled images: {len(added)} added, {len(removed)} removed, "
                        f"{len(relabeled)} relabeled (e.g. "
                        f"{next(iter(sorted(added) or sorted(removed) or relabeled))})")
    if problems:
        raise ConfigError(
            f"{run_path} was trained on another split of this data (its split.json):\n  "
            + "\n  ".join(problems) + "\nStart a new run with another --out (or delete "
            f"{run_path}) to train on the data as it is now")
    count = saved.get("unlabeled_count", record["unlabeled_count"])
    if (count != record["unlabeled_count"] or saved.get(
            "unlabeled_fingerprint", record["unlabeled_fingerprint"]) != record[
            "unlabeled_fingerprint"]):
        return (f"the unlabeled images changed since this run read them ({count} then, "
                f"{record['unlabeled_count']} now): what the run keeps per image is matched by "
                "path, and images that are new to it are labeled afresh")
    return None
