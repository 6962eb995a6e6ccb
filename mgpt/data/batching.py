"""Deterministic, fixed-shape batches.

``Batches.batch_at(step)`` is a pure function of ``(seed, step)``: the epoch is
``step // steps_per_epoch`` and its order is a numpy permutation seeded with ``(seed, epoch)``.
So a resumed run sees exactly the batches an uninterrupted run would, without saving any
iterator state. The last short batch of an epoch is filled up with copies of its first row that
carry ``example_weight`` 0 (and -100 integer labels), so shapes never change and nothing compiles
twice, while every real example is seen exactly once per epoch.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from mgpt.constants import IGNORE_INDEX
from mgpt.data.errors import DataError


class Batches:
    """Fixed-size batches over a dict of equally long numpy arrays."""

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int = 0, shuffle: bool = True):
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        arrays = {key: np.asarray(value) for key, value in arrays.items()}
        if not arrays:
            raise DataError("Batches needs at least one array")
        lengths = {key: len(value) for key, value in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"all arrays must have the same number of rows, got {lengths}")
        self.num_examples = next(iter(lengths.values()))
        if self.num_examples == 0:
            raise DataError("Batches needs at least one example")
        if "example_weight" not in arrays:
            arrays["example_weight"] = np.ones((self.num_examples,), dtype=np.float32)
        self.arrays = arrays
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.steps_per_epoch = -(-self.num_examples // self.batch_size)  # ceil
        self._cached_epoch = None
        self._cached_order = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def order(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch``: a permutation seeded with ``(seed, epoch)``."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        if self._cached_epoch != epoch:  # one permutation per epoch, not per step
            rng = np.random.default_rng([self.seed, int(epoch)])
            self._cached_order = rng.permutation(self.num_examples)
            self._cached_epoch = epoch
        return self._cached_order

    def take(self, indices: np.ndarray, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """Gather rows ``indices``, padded to ``batch_size`` with weight-0 copies of the first row.

        With ``process_count`` > 1 only this process's contiguous slice of the padded batch is
        gathered: each host of a multi-host run reads just its own rows.
        """
        indices = np.asarray(indices, dtype=np.int64)
        real = len(indices)
        missing = self.batch_size - real
        padded = np.concatenate([indices, np.full((missing,), indices[0], dtype=np.int64)]) if missing else indices
        if self.batch_size % process_count:
            raise DataError(f"batch_size {self.batch_size} is not divisible by the {process_count} processes")
        per_process = self.batch_size // process_count
        lo = process_index * per_process
        rows = slice(lo, lo + per_process)
        batch = {key: value[padded[rows]] for key, value in self.arrays.items()}
        is_padding = np.arange(self.batch_size)[rows] >= real
        if is_padding.any():
            weight = batch["example_weight"].astype(np.float32, copy=True)
            weight[is_padding] = 0.0
            batch["example_weight"] = weight
            labels = batch.get("labels")
            if labels is not None and np.issubdtype(labels.dtype, np.integer):
                labels = labels.copy()
                labels[is_padding] = IGNORE_INDEX
                batch["labels"] = labels
        return batch

    def batch_at(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """The batch of global training step ``step`` (any non-negative int, across epochs).

        In a multi-host run, pass ``jax.process_index()`` and ``jax.process_count()`` to get only
        this process's rows of that global batch.
        """
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        epoch, within = divmod(int(step), self.steps_per_epoch)
        start = within * self.batch_size
        return self.take(self.order(epoch)[start : start + self.batch_size], process_index, process_count)

    def eval_batches(self, process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """All examples once, in file order; the last batch is padded like in training."""
        for start in range(0, self.num_examples, self.batch_size):
            indices = np.arange(start, min(start + self.batch_size, self.num_examples))
            yield self.take(indices, process_index, process_count)
