"""Data layer: file readers, tokenization into fixed-shape arrays, and deterministic batching."""

from mgpt.data.batching import Batches
from mgpt.data.dataset import DatasetBundle, build_datasets
from mgpt.data.sources import DataError

__all__ = ["Batches", "DataError", "DatasetBundle", "build_datasets"]
