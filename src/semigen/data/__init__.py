"""Data layer: every command reads images through `load_dataset`."""

from . import added
from .report import DataError, DataReport
from .sources import (
                      Dataset,
                      ImageSet,
                      class_folders,
                      folder_name,
                      labeled_split,
                      load_dataset,
                      read_class_folders,
                      read_images,
)

# The augmentations and batches import torch and kornia: loaded on first use, so that reading a
# run's images (review, export) does not
TRANSFORMS = ("StepBatchSampler", "Views", "endless_batches", "strong", "to_float", "to_uint8",
              "weak")


def __getattr__(name: str):
    if name in TRANSFORMS:
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DataError", "added", "DataReport", "Dataset", "ImageSet", "StepBatchSampler", "Views",
           "class_folders", "endless_batches", "folder_name", "labeled_split", "load_dataset",
           "read_class_folders", "read_images", "strong",
           "to_float", "to_uint8", "weak"]
