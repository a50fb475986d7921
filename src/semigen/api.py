"""The Python API: the command line's verbs as functions.

    import semigen
    summary = semigen.fit("photos/", out="runs/photos", preset="quick", rounds=2)
    semigen.predict("runs/photos", "new_photos/", out="labels.csv")

Training verbs take DATA (a folder or a built-in name), ``out`` (the run directory), an optional
``preset`` and YAML ``config``, and any config field as a keyword, with ``__`` or ``.`` between
section and field: ``label__lr=0.03`` or ``**{"label.lr": 0.03}``. Keywords without a section
are the command line's flags (``rounds``, ``seed``, ``device``, ``labels_per_class``, ...)."""

from __future__ import annotations

from pathlib import Path

from .config import Config, make_config
from .run import Layout, as_run_path, run_config

__all__ = ["demo", "evaluate", "export", "fit", "generate", "label", "make_config", "predict",
           "report", "review", "sample", "suggest"]


def fit(data: str | None = None, out: str | None = None, **options) -> dict:
    """label -> generate -> joint rounds -> evaluate -> report; returns metrics.json's ``fit``
    (None on the DDP ranks other than 0, which only train)."""
    from .joint.fit import fit as run_fit
    return run_fit(make_config(data, out, **options))


def label(data: str | None = None, out: str | None = None, **options) -> dict:
    """Train the semi-supervised classifier; writes the run's pseudo-labels."""
    return label_run(make_config(data, out, **options))


def generate(data: str | None = None, out: str | None = None, **options) -> dict:
    """Train the class-conditional generator (on ``out``'s pseudo-labels, if it has them)."""
    return generate_run(make_config(data, out, **options))


def label_run(cfg: Config) -> dict:
    """`semigen label`: open the run (taking the labels added since its split) and train its
    classifier."""
    from .labeling.train import MODEL_FIELDS, check_networks, train_classifier
    from .run import open_run
    check_networks(cfg)
    with open_run(cfg, MODEL_FIELDS, take_added_labels=True) as run:
        return train_classifier(run)


def generate_run(cfg: Config) -> dict:
    """`semigen generate`: open the run and train its generator."""
    from .generation import model_fields, train_generator
    from .run import open_run
    with open_run(cfg, model_fields(cfg.generate.backend)) as run:
        return train_generator(run)


def evaluate(run: str | Path, test: str | None = None, **options) -> dict:
    """Metrics on real held-out images into the run's metrics; `options` as for `fit`, e.g.
    ``evaluate__per_class=200``."""
    from .evaluation.run import evaluate as evaluate_cfg
    return evaluate_cfg(run_config(as_run_path(run), **options), test)


def report(run: str | Path) -> Path:
    """Write the run's report.html; return its path."""
    from .evaluation.report import write_report
    return write_report(run)  # it refuses a folder that is not a run


def suggest(run: str | Path, n: int = 50, out: str | Path = "suggest.csv", seed: int = 0,
            overwrite: bool = False) -> list[dict]:
    """The `n` unlabeled images most worth labeling next, written to `out` as CSV (a new file,
    or any with `overwrite`)."""
    from .labeling.suggest import suggest as run_suggest
    return run_suggest(run, n, out, seed, overwrite)  # it refuses a folder that is not a run


def review(run: str | Path, host: str = "127.0.0.1", port: int = 8765, suggest: int = 50,
           generated_per_class: int = 16) -> None:
    """Serve the run's review pages until Ctrl-C (see `semigen.review`)."""
    from .review.app import serve
    serve(as_run_path(run), host, port, suggest, generated_per_class)


def export(run: str | Path, format: str, out: str | Path, min_confidence: float | None = None,
           generated_per_class: int = 0, overwrite: bool = False) -> dict:
    """The run's labeled images (the user's, the added ones) and its pseudo-labeled ones at
    `min_confidence` or above (+ generated ones) as `format`: imagefolder, hf or csv."""
    from .export import export as run_export
    return run_export(as_run_path(run), format, out, min_confidence, generated_per_class,
                      overwrite)


def predict(run: str | Path, images: str | Path, out: str | Path, checkpoint: str = "latest",
            device: str = "auto", overwrite: bool = False) -> dict:
    """Label new images with the run's classifier; writes path,label,confidence to `out` (a
    new file, or any but an input image with `overwrite`)."""
    from .labeling.predict import predict_images
    return predict_images(as_run_path(run), images, out, checkpoint, device, overwrite)


def sample(run: str | Path, per_class: int, out: str | Path, seed: int = 0,
           batch_size: int = 256, checkpoint: str = "latest", device: str = "auto",
           guidance: float | None = None, sample_steps: int | None = None,
           overwrite: bool = False) -> dict:
    """Write `per_class` generated images of each class to ``out/<class>/`` + manifest.csv (a
    new or empty folder, or any with `overwrite`); a diffusion generator samples with
    `guidance` and `sample_steps` (None: the run's)."""
    from .generation.export import check_sampling, sample_to_folder
    run = as_run_path(run)
    check_sampling(run, per_class, batch_size, guidance, sample_steps)
    return sample_to_folder(run, per_class, out, seed, batch_size, checkpoint, device,
                            guidance, sample_steps, overwrite)


def demo(out: str | Path = "runs/demo", device: str = "auto") -> Path:
    """The whole fit on the built-in digits set with the demo budget; returns the report."""
    fit("digits", out=str(out), preset="demo", device=device)
    return Layout(out).report

