"""semigen: semi-supervised image generation.

Few labels in; pseudo-labels with confidences, class-conditional images and a better
classifier out. See README.md for the command line and the Python API."""

__version__ = "0.1.0"

__all__ = ["demo", "evaluate", "fit", "generate", "label", "predict", "report", "sample",
           "suggest"]


def __getattr__(name: str):
    # The API is imported on first use: a command that needs no network (review of a cached
    # run) then starts without importing torch (PEP 562).
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'semigen' has no attribute {name!r}")
