"""Deterministic, fixed-shape batches.

``Batches.batch_at(step)`` is a pure function of ``(seed, step)``: the epoch is
``step // steps_per_epoch`` and its order is a numpy permutation seeded with ``(seed, epoch)``.
So a resumed run sees exactly the batches an uninterrupted run would, without saving any
iterator state. The last short batch of an epoch is filled up with copies of its first row that
carry ``example_weight`` 0 (and -100 integer labels), so shapes never change and nothing compiles
twice, while every real example is seen exactly once per epoch.

With ``buckets`` (a ladder of lengths, see mgpt.data.lengths) the token-axis arrays of each batch
are cut to the smallest bucket that holds the batch's longest row: shapes follow the data, and only
one program per bucket compiles. ``group_by_length`` sorts each window of ``group_window`` batches by
length (less padding still); evaluation batches go longest first (``eval_order``), and callers put
the predictions back in file order. :class:`AugmentedBatches` makes each step's rows afresh (training-time
augmentation) while keeping the order, the padding and the bucket cut of these batches.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from mgpt.constants import IGNORE_INDEX
from mgpt.data import lengths as lengths_lib
from mgpt.data.errors import DataError

# Arrays whose second axis is the token axis (cut to the bucket length); labels join them for tasks with a
# label per token.
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "segment_ids")


class Batches:
    """Fixed-size batches over a dict of equally long numpy arrays (rows cut to a bucket length when
    ``buckets`` is given; ``token_keys`` name the arrays with a token axis)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int = 0, shuffle: bool = True,
                 buckets: Sequence[int] | None = None, token_keys: Sequence[str] = TOKEN_KEYS,
                 group_by_length: bool = False, group_window: int = 50):
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
        self.buckets = tuple(buckets) if buckets else None
        self.token_keys = tuple(key for key in token_keys if key in arrays)
        self.group_by_length = bool(group_by_length)
        self.group_window = int(group_window)
        if self.group_by_length and self.group_window <= 0:
            raise DataError(f"group_window must be positive, got {group_window}")
        self.lengths = None  # tokens each row needs (for buckets and length grouping)
        if (self.buckets or self.group_by_length) and "attention_mask" in arrays:
            self.lengths = lengths_lib.row_lengths(arrays["attention_mask"])

    def __len__(self) -> int:
        return self.steps_per_epoch

    def order(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch``: a permutation seeded with ``(seed, epoch)``."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        if self._cached_epoch != epoch:  # one permutation per epoch, not per step
            rng = np.random.default_rng([self.seed, int(epoch)])
            order = rng.permutation(self.num_examples)
            if self.group_by_length and self.lengths is not None:
                order = lengths_lib.group_by_length(order, self.lengths, self.batch_size, self.group_window)
            self._cached_order = order
            self._cached_epoch = epoch
        return self._cached_order

    def take(self, indices: np.ndarray, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """Gather rows ``indices``, padded to ``batch_size`` with weight-0 copies of the first row.

        With ``process_count`` > 1 only this process's contiguous slice of the padded batch is
        gathered: each host of a multi-host run reads just its own rows.
        """
        return self._gather(self.arrays, self.lengths, indices, process_index, process_count)

    def _gather(self, arrays: Mapping[str, np.ndarray], lengths: np.ndarray | None, indices: np.ndarray,
                process_index: int, process_count: int) -> dict[str, np.ndarray]:
        """:meth:`take` over ``arrays`` whose rows need ``lengths`` tokens (None: no bucket cut)."""
        indices = np.asarray(indices, dtype=np.int64)
        real = len(indices)
        missing = self.batch_size - real
        padded = np.concatenate([indices, np.full((missing,), indices[0], dtype=np.int64)]) if missing else indices
        if self.batch_size % process_count:
            raise DataError(f"batch_size {self.batch_size} is not divisible by the {process_count} processes")
        per_process = self.batch_size // process_count
        lo = process_index * per_process
        rows = slice(lo, lo + per_process)
        batch = {key: value[padded[rows]] for key, value in arrays.items()}
        width = _bucket_width(lengths, padded, self.buckets)  # from the global batch: every process cuts alike
        if width is not None:
            for key in self.token_keys:
                batch[key] = batch[key][:, :width]
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

    def width(self, indices: np.ndarray) -> int | None:
        """The bucket length the rows ``indices`` are cut to; None without buckets (full length)."""
        return _bucket_width(self.lengths, indices, self.buckets)

    def indices_at(self, step: int) -> np.ndarray:
        """The example indices (rows of the arrays) of global training step ``step``, before padding."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        epoch, within = divmod(int(step), self.steps_per_epoch)
        start = within * self.batch_size
        return self.order(epoch)[start : start + self.batch_size]

    def batch_at(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """The batch of global training step ``step`` (any non-negative int, across epochs).

        In a multi-host run, pass ``jax.process_index()`` and ``jax.process_count()`` to get only
        this process's rows of that global batch.
        """
        return self.take(self.indices_at(step), process_index, process_count)

    def eval_order(self) -> np.ndarray:
        """The order :meth:`eval_batches` visits examples in: file order, or longest first with buckets
        (similar lengths share a batch, so it needs little padding). Stable, so ties keep file order."""
        if not self.buckets or self.lengths is None:
            return np.arange(self.num_examples)
        return np.argsort(-self.lengths, kind="stable")

    def eval_batches(self, process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """All examples once, in :meth:`eval_order`; the last batch is padded like in training."""
        order = self.eval_order()
        for start in range(0, self.num_examples, self.batch_size):
            yield self.take(order[start:start + self.batch_size], process_index, process_count)


class AugmentedBatches(Batches):
    """Training batches whose rows are made afresh at each step (on-the-fly augmentation, mgpt.data.augmented).

    ``rows_at(indices, step)`` returns arrays for the examples ``indices`` as step ``step`` sees them
    (e.g. augmented, then re-encoded): the same keys and row width as ``arrays`` (a subset of its keys; the
    others, such as ``example_weight``, are taken as they are). It must be a pure function of its arguments,
    so the batch of a step stays a pure function of ``(seed, step)`` and a resumed run sees the same batches.
    The order (and length grouping) comes from the original ``arrays``; the bucket length from the rows as
    made. Every process makes the whole global batch and keeps its slice, so all cut to the same length.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int = 0, *,
                 rows_at: Callable[[np.ndarray, int], Mapping[str, np.ndarray]], **kwargs):
        super().__init__(arrays, batch_size, seed, **kwargs)
        self.rows_at = rows_at

    def batch_at(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        indices = self.indices_at(step)
        fresh = self.rows_at(indices, int(step))
        arrays = {}
        for key, value in self.arrays.items():
            if key not in fresh:
                arrays[key] = value[indices]
                continue
            made = np.asarray(fresh[key])
            if made.shape[1:] != value.shape[1:] or len(made) != len(indices):
                raise DataError(f"augmented rows of {key!r} have shape {made.shape}; expected "
                                f"{(len(indices),) + value.shape[1:]}")
            arrays[key] = made.astype(value.dtype, copy=False)
        unknown = sorted(set(fresh) - set(self.arrays))
        if unknown:
            raise DataError(f"augmented rows have arrays {unknown} the split's batches do not have")
        lengths = lengths_lib.row_lengths(arrays["attention_mask"]) if self.lengths is not None else None
        return self._gather(arrays, lengths, np.arange(len(indices)), process_index, process_count)


def _bucket_width(lengths: np.ndarray | None, indices: np.ndarray, buckets) -> int | None:
    """The bucket length rows ``indices`` (of rows needing ``lengths`` tokens) are cut to; None: full length."""
    if not buckets or lengths is None:
        return None
    return lengths_lib.bucket_for(int(lengths[np.asarray(indices)].max()), buckets)
