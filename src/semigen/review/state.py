"""What `semigen review` shows, computed once when it starts: the run's classifier over the
unlabeled images (probabilities, features, the suggestions to label next, the confused pairs),
the likely errors among the user's own labels, the generated images with how often the
classifier recognises them; and the user's decisions, kept on disk as they are made.

What the classifier says is cached in ``RUN/review/`` under the checkpoint's fingerprint, so a
second start on the same run opens at once, without importing torch; a retrained classifier
(or other labels, other settings) computes it again."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import BUILTINS, ConfigError, load_run_config
from ..data import added, load_dataset, read_class_folders
from ..data.cells import HIDDEN, restored
from ..files import file_sha256
from ..run import Layout, as_run_path, load_stage, read_metrics, replacing, stage_checkpoint

log = logging.getLogger("semigen")


class SaveFailed(OSError):
    """A decision that could not be written to disk (and so was not taken)."""


@dataclass
class Decisions:
    """The user's decisions, each written to disk at once: labels (``RUN/added_labels.csv``,
    the data contract's format, which the next `label` / `fit` of the run takes as true) and
    skipped images (``RUN/review/skipped.csv``, so that Label next does not offer them again).
    A decision that cannot be written is not taken (`SaveFailed`): memory and disk agree."""
    run: Path
    labels: dict[str, str] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    left_out: str = ""  # what of added_labels.csv was not taken when review opened, and why

    @classmethod
    def open(cls, run: Path, data) -> Decisions:
        """The decisions on disk, checked against `data`: rows naming no image of the run, a
        class it does not have, or holding control characters are left out, counted by
        reason (`left_out`), and the file as it was is kept beside (nothing is lost)."""
        layout = Layout(run)
        skipped_file = layout.inside(layout.review_skipped)
        skipped = set(added.read(skipped_file)) if skipped_file.is_file() else set()
        labels_file = layout.inside(layout.added_labels)
        labels, why = checked_added_labels(labels_file, data)
        left_out = ""
        if why:
            kept = layout.inside(layout.review / "added_labels.as-found.csv")
            kept.parent.mkdir(parents=True, exist_ok=True)
            with replacing(kept, "wb") as f:
                f.write(labels_file.read_bytes())
            left_out = (f"{labels_file.name}: " + "; ".join(why) + f" (the file as it was: "
                        f"{kept}; the next decision rewrites {labels_file.name} without them)")
            log.warning(f"review: {left_out}")
        return cls(run, labels, skipped & set(data.unlabeled.ids), left_out=left_out)

    def set_label(self, image: str, label: str | None) -> None:
        """Label `image` (None: take its added label back, as undo does)."""
        with self.lock:
            labels, skipped = dict(self.labels), set(self.skipped)
            if label is None:
                labels.pop(image, None)
            else:
                labels[image] = label
                skipped.discard(image)
            self._write(labels, skipped)

    def set_skipped(self, image: str, skipped: bool) -> None:
        with self.lock:
            now = set(self.skipped)
            (now.add if skipped else now.discard)(image)
            self._write(self.labels, now)

    def _write(self, labels: dict[str, str], skipped: set[str]) -> None:
        """Both files, then memory: where a write fails, nothing changes in memory."""
        layout = Layout(self.run)
        try:
            if labels != self.labels:
                added.write(layout.inside(layout.added_labels), labels)
            if skipped != self.skipped:
                added.write(layout.inside(layout.review_skipped),
                            {k: "skipped" for k in sorted(skipped)})
        except OSError as e:
            where = e.filename or layout.added_labels
            raise SaveFailed(f"could not write {where}: {e.strerror or e}; the decision was not "
                             "taken (fix the file or its folder, then decide again)") from None
        self.labels, self.skipped = labels, skipped


def checked_added_labels(path: Path, data) -> tuple[dict[str, str], list[str]]:
    """The rows of the added labels CSV at `path` that name an image of `data` and one of its
    classes, and what was left out and why (counts, an example each; extra columns named)."""
    found, columns = added.rows(path)
    images = set(data.labeled.ids) | set(data.unlabeled.ids)
    classes = set(data.classes)
    labels, reasons, example = {}, Counter(), {}
    for line, image, label in found:
        why = ("an empty path or label" if not image or not label else
               "control or direction characters" if HIDDEN.search(image + label) else
               "a class this data does not have" if label not in classes else
               "no image of this run" if image not in images else None)
        if why is None:
            labels[image] = label
        else:
            reasons[why] += 1
            example.setdefault(why, f"line {line}")
    why = [f"{n:,} row(s) left out: {reason} (e.g. {example[reason]})"
           for reason, n in reasons.most_common()]
    extra = [c for c in columns if c not in ("path", "label")]
    if extra:
        why.append(f"column(s) {', '.join(map(repr, extra))} not kept")
    return labels, why


@dataclass
class Review:
    run: Path
    cfg: object
    data: object  # the Dataset the classifier was trained on (its split)
    classes: list[str]
    probs: np.ndarray  # unlabeled x classes: the run's (calibrated) classifier
    suggestions: list[int]  # unlabeled indices, most worth labeling first
    pairs: list[dict]  # the confused class pairs, most confused first
    label_issues: dict  # the user's labels the held-out predictions disagree with
    generated: list[dict]  # per class: files, predicted classes
    metrics: dict
    decisions: Decisions
    source_root: Path | None  # the data folder (None: a built-in: images from the arrays)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    def images(self, part: str):
        """The run's labeled or unlabeled images (an ImageSet), by the page's name for them."""
        return self.data.labeled if part == "labeled" else self.data.unlabeled

    def image_id(self, part: str, index: int) -> str:
        return self.images(part).ids[index]


PAGE_PER_CLASS = 1000  # generated images per class a page shows, at most


def load(run: str | Path, suggest: int = 50, generated_per_class: int = 16, seed: int = 0
         ) -> Review:
    """Everything the pages show, for the run in `run`. What the classifier says of the images
    is computed once per checkpoint and images and kept (`classifier_view`): a second start
    reads it and does not import torch."""
    run = as_run_path(run)
    if not 0 <= generated_per_class <= PAGE_PER_CLASS:
        raise ConfigError(f"--generated-per-class {generated_per_class}: give 0-"
                          f"{PAGE_PER_CLASS:,} (what a page shows; `semigen sample` writes more)")
    layout = Layout(run)
    cfg = load_run_config(layout.config)
    checkpoint = stage_checkpoint(run, "label", "latest", "classifier")
    # The split as the user labeled it: the run's own added labels are the page's decisions,
    # checked row by row (`Decisions.open`), not applied unchecked by the loader
    if cfg.data.added_labels and \
            Path(cfg.data.added_labels).resolve() == layout.added_labels.resolve():
        cfg.data.added_labels = None
    data = load_dataset(cfg.data)
    data.report.raise_if_errors()
    generated = generated_folder(run, data, generated_per_class)
    view = classifier_view(run, checkpoint, data, generated, min(suggest, len(data.unlabeled)),
                           seed)
    decisions = Decisions.open(run, data)
    log.info(f"review: {len(data.unlabeled):,} unlabeled and {len(data.labeled):,} labeled images")
    source = None if cfg.data.source in BUILTINS else Path(cfg.data.source)
    return Review(
        run=run, cfg=cfg, data=data, classes=list(data.classes), probs=view["probs"],
        suggestions=view["suggestions"].tolist(), pairs=confused_pairs(view["probs"], data.classes),
        label_issues=likely_label_errors(data, view),
        generated=generated_images(run, generated, data, view),
        metrics=read_metrics(run), decisions=decisions, source_root=source)


def generated_folder(run: Path, data, per_class: int) -> Path | None:
    """``RUN/review/generated/``: `per_class` images of each class from the run's generator,
    sampled once per generator; None without one."""
    layout = Layout(run)
    generator = layout.final_checkpoint("generate")
    if per_class < 1 or not generator.is_file():
        return None
    folder = layout.inside(layout.review_generated)
    done = folder / "manifest.csv"
    # sampled again where the count asked for changed or the generator did (a later round)
    made_by = file_sha256(generator)
    if not done.is_file() or _sampled(done) != (per_class * len(data.classes), {made_by}):
        from ..generation.export import sample_to_folder

        shutil.rmtree(folder, ignore_errors=True)  # none of an earlier sampling is left over
        sample_to_folder(run, per_class, folder, seed=0)
    return folder


# What the classifier says of the images the pages show, as arrays (the cache file's entries):
# the unlabeled images' probabilities and the suggestions among them; the user's labeled images'
# probabilities (held out where the label stage kept them), where they came from, and which
# cleanlab flags; the generated images with their classes and probabilities.
VIEW = ("probs", "suggestions", "issue_ids", "issue_probs", "issue_source", "issue_flagged",
        "generated_ids", "generated_classes", "generated_probs")


def classifier_view(run: Path, checkpoint: Path, data, generated: Path | None, suggest: int,
                    seed: int) -> dict[str, np.ndarray]:
    """The `VIEW` of the classifier in `checkpoint`, read from ``RUN/review/`` when this very
    checkpoint made it for these very images, labels, generated images and settings; else
    computed (the only place review imports torch) and kept."""
    key = view_key(checkpoint, data, generated, suggest, seed)
    layout = Layout(run)
    cache = layout.inside(layout.review_predictions(key[:16]))
    if cache.is_file():
        try:  # never pickles (np.load's default): a planted or torn cache is computed again
            with np.load(cache) as found:
                view = {name: found[name] for name in VIEW}
                made_for = str(found["key"]) if "key" in found else ""
            if made_for == key and _fits(view, data):
                return view
            log.warning(f"review: {cache} was not made from this run's classifier and images "
                        "(or does not fit them); computed again")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning(f"review: {cache} could not be read ({e}); computed again")
    log.info(f"review: the classifier reads the {len(data.unlabeled):,} unlabeled images once "
             f"(kept in {cache.parent})")
    view = _computed_view(run, data, generated, suggest, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    for old in cache.parent.glob("predictions-*.npz"):
        old.unlink()
    with replacing(cache, "wb") as f:
        np.savez(f, key=np.array(key), **view)
    return view


def view_key(checkpoint: Path, data, generated: Path | None, suggest: int, seed: int) -> str:
    """What decides the classifier's view, by content: the checkpoint's bytes, the images'
    pixels, ids and labels, the generated images' manifest and the settings. An image whose
    pixels changed, or weights replaced in place, give another key."""
    digest = hashlib.sha256(f"{file_sha256(checkpoint)}|{suggest}|{seed}".encode())
    for part in (data.unlabeled, data.labeled):
        digest.update("/".join(part.ids).encode("utf-8", "surrogateescape"))
        digest.update(np.ascontiguousarray(part.images).data)
    digest.update(np.asarray(data.labeled.labels, dtype=np.int64).tobytes())
    if generated is not None:
        digest.update((generated / "manifest.csv").read_bytes())
    return digest.hexdigest()


def _fits(view: dict[str, np.ndarray], data) -> bool:
    """A read cache whose arrays have the shapes and kinds this run's would."""
    classes = len(data.classes)
    issues, made = len(view["issue_ids"]), len(view["generated_ids"])
    return (view["probs"].shape == (len(data.unlabeled), classes)
            and view["issue_probs"].shape == (issues, classes)
            and view["generated_probs"].shape == (made, classes)
            and view["issue_flagged"].shape == (issues,)
            and view["generated_classes"].shape == (made,)
            and view["issue_source"].shape == ()
            and all(view[name].dtype.kind in "iu" for name in ("suggestions",
                                                               "generated_classes"))
            and bool(np.isin(view["suggestions"], np.arange(len(data.unlabeled))).all())
            and bool(np.isin(view["generated_classes"], np.arange(classes)).all())
            and set(view["issue_ids"].tolist()) <= set(data.labeled.ids)
            and all(_probabilities(view[name]) for name in ("probs", "issue_probs",
                                                              "generated_probs")))


def _probabilities(rows: np.ndarray) -> bool:
    """Rows of class probabilities: finite, within [0, 1], each summing to 1."""
    return (rows.dtype.kind == "f" and bool(np.isfinite(rows).all())
            and bool(((rows >= 0) & (rows <= 1)).all())
            and bool(np.allclose(rows.sum(1), 1, atol=1e-3)) if rows.size else True)


def _computed_view(run: Path, data, generated: Path | None, suggest: int, seed: int
                   ) -> dict[str, np.ndarray]:
    from ..labeling import nets
    from ..labeling.suggest import choose, features_and_probs

    _, state = load_stage(run, "label", "latest", "classifier")
    model = nets.from_checkpoint(state)
    features, probs = features_and_probs(model, data.unlabeled.images)
    suggestions = choose(features, probs, suggest, seed) if len(probs) else []
    # The user's labels as predictions that did not train on them see them (the cross-fitted
    # probabilities the label stage keeps); where the run has none (no class with two labels,
    # calibration off), the final classifier's own, which flag only gross errors (said)
    calibration = state.get("calibration") or {}
    labeled = set(data.labeled.ids)
    held = [k for k, image in enumerate(calibration.get("held_out_ids") or [])
            if image in labeled]
    if held:
        issue_ids = [calibration["held_out_ids"][k] for k in held]
        issue_probs = np.asarray(calibration["held_out_probs"], dtype=np.float64)[held]
        source = "held out"
    else:
        issue_ids = list(data.labeled.ids)
        _, issue_probs = features_and_probs(model, data.labeled.images)
        source = "trained on"
    where = {image: i for i, image in enumerate(data.labeled.ids)}
    given = np.array([data.labeled.labels[where[i]] for i in issue_ids], dtype=np.int64)
    if generated is not None:
        images, _ = read_class_folders(generated, data.classes, data.shape)
        _, generated_probs = features_and_probs(model, images.images)
        generated_ids, generated_classes = list(images.ids), images.labels
    else:
        generated_ids, generated_classes = [], np.zeros(0)
        generated_probs = np.zeros((0, len(data.classes)))
    return {"probs": probs.astype(np.float32),
            "suggestions": np.asarray(suggestions, dtype=np.int64),
            "issue_ids": np.array(issue_ids, dtype=str),
            "issue_probs": np.asarray(issue_probs, dtype=np.float32),
            "issue_source": np.array(source),
            "issue_flagged": flagged_labels(given, issue_probs),
            "generated_ids": np.array(generated_ids, dtype=str),
            "generated_classes": np.asarray(generated_classes, dtype=np.int64),
            "generated_probs": np.asarray(generated_probs, dtype=np.float32)}


def confused_pairs(probs: np.ndarray, classes: list[str], top: int = 10) -> list[dict]:
    """Class pairs the classifier mixes up most: for each pair, the images whose two likeliest
    classes it is, weighed by the probability the second choice takes (an image split 50/50
    counts 0.5, a sure one nearly 0)."""
    if len(probs) == 0 or len(classes) < 2:
        return []
    order = np.argsort(-probs, axis=1)[:, :2]
    second = probs[np.arange(len(probs)), order[:, 1]]
    low, high = order.min(1), order.max(1)
    weight = np.zeros((len(classes), len(classes)))
    count = np.zeros_like(weight)
    np.add.at(weight, (low, high), second)
    np.add.at(count, (low, high), 1)
    pairs = [{"a": int(a), "b": int(b), "a_name": classes[a], "b_name": classes[b],
              "images": int(count[a, b]), "weight": float(weight[a, b])}
             for a in range(len(classes)) for b in range(a + 1, len(classes)) if count[a, b]]
    return sorted(pairs, key=lambda p: -p["weight"])[:top]


def flagged_labels(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Which of the given `labels` cleanlab's `find_label_issues` calls likely errors on
    `probs`; none where it cannot tell (one class, too few labels per class)."""
    from cleanlab.filter import find_label_issues

    flagged = np.zeros(len(labels), dtype=bool)
    if len(labels) and len(np.unique(labels)) > 1:
        try:
            # n_jobs=1: cleanlab's process pool forks this threaded server (torch, uvicorn),
            # and a forked copy of a held lock hangs it; a user's labels take milliseconds
            flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate",
                                        n_jobs=1)
        except (ValueError, IndexError) as e:  # too few labels per class for its estimates
            log.info(f"review: cleanlab could not rank the labels ({e}); ranked by disagreement")
    return np.asarray(flagged, dtype=bool)


def likely_label_errors(data, view: dict[str, np.ndarray]) -> dict:
    """The user's labels ranked by how much predictions disagree with them: flagged ones first,
    then by the probability their label gets."""
    where = {image: i for i, image in enumerate(data.labeled.ids)}
    ids, probs = view["issue_ids"].tolist(), view["issue_probs"]
    labels = np.array([data.labeled.labels[where[i]] for i in ids], dtype=np.int64)
    flagged = view["issue_flagged"]
    given = probs[np.arange(len(ids)), labels] if len(ids) else np.zeros(0)
    ranked = sorted(range(len(ids)), key=lambda k: (not flagged[k], given[k]))
    rows = [{"index": where[ids[k]], "id": ids[k], "given": int(labels[k]),
             "given_probability": float(given[k]), "suggested": int(probs[k].argmax()),
             "suggested_probability": float(probs[k].max()), "flagged": bool(flagged[k])}
            for k in ranked]
    return {"rows": rows, "flagged": int(flagged.sum()), "source": str(view["issue_source"])}


def generated_images(run: Path, folder: Path | None, data, view: dict[str, np.ndarray]
                     ) -> list[dict]:
    """Per class: the generated images in `folder` and the class the run's classifier gives
    each; [] without a generator."""
    if folder is None:
        return []
    files = [folder / image_id for image_id in view["generated_ids"].tolist()]
    classes, probs = view["generated_classes"], view["generated_probs"]
    measured = read_metrics(run).get("evaluate", {}).get("images", {})
    out = []
    for c, name in enumerate(data.classes):
        members = np.flatnonzero(classes == c)
        out.append({"class": c, "name": name, "files": [files[i] for i in members],
                    "predicted": [int(probs[i].argmax()) for i in members],
                    "recognised": float((probs[members].argmax(1) == c).mean())
                    if len(members) else 0.0,
                    # what `evaluate` measured of the class's variety, if it has
                    "variety": measured.get("per_class", {}).get(name, {}).get("variety")})
    return out


def _sampled(path: Path) -> tuple[int, set[str]]:
    """How many images a sampling manifest lists, and the generator checkpoints (SHA-256)
    that made them."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not all((path.parent / restored(row.get("path") or "")).is_file() for row in rows):
        return -1, set()  # images deleted since: sampled again
    return len(rows), {row.get("checkpoint_sha256") or "" for row in rows}
