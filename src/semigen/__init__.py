"""semigen: semi-supervised image generation.

Few labels in; pseudo-labels with confidences, class-conditional images and a better
classifier out. See README.md for the command line and the Python API."""

__version__ = "0.1.0"

from .api import demo, evaluate, fit, generate, label, predict, report, sample, suggest  # noqa: E402

__all__ = ["demo", "evaluate", "fit", "generate", "label", "predict", "report", "sample",
           "suggest"]
