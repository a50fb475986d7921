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
from .transforms import StepBatchSampler, Views, endless_batches, strong, to_float, to_uint8, weak

__all__ = ["DataError", "added", "DataReport", "Dataset", "ImageSet", "StepBatchSampler", "Views",
           "class_folders", "endless_batches", "folder_name", "labeled_split", "load_dataset",
           "read_class_folders", "read_images", "strong",
           "to_float", "to_uint8", "weak"]
