"""Data layer: one reader per format into records, examples by label kind, cleaning, splitting,
encoding helpers the tasks call, and deterministic batching."""

from mgpt.data.batching import Batches
from mgpt.data.dataset import DatasetBundle, EncodingTask, build_datasets
from mgpt.data.errors import DataError
from mgpt.data.reading import read_examples, read_file

__all__ = ["Batches", "DataError", "DatasetBundle", "EncodingTask", "build_datasets", "read_examples", "read_file"]
