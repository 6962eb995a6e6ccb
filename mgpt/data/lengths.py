"""Shapes that follow the data: row lengths, bucket lengths, and length-grouped orders.

Every batch is padded to the smallest bucket length that holds its longest row, so little compute goes
to padding while only a handful of shapes (one compiled program each) ever occur. The default ladder
grows by about 1.5x per rung (8, 12, 16, 24, 32, 48, 64, 96, 128, ...): a batch never carries more than
a third of padding beyond its longest row, and a ``max_length`` of 128 gives at most nine programs.

All functions here are pure: the same lengths, seed and epoch give the same order and shapes, so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mgpt.data.errors import DataError

SMALLEST_BUCKET = 8


def row_lengths(attention_mask: np.ndarray) -> np.ndarray:
    """Tokens each row needs: one past its last non-zero mask entry ((N, T) -> (N,); 0 for an empty row).

    Rows are right-padded (real tokens first); a packed row's mask is non-zero on every real token.
    """
    mask = np.asarray(attention_mask) != 0
    if mask.ndim != 2:
        raise DataError(f"attention_mask must be (rows, tokens), got shape {mask.shape}")
    width = mask.shape[1]
    last = width - np.argmax(mask[:, ::-1], axis=1)  # one past the last real token
    return np.where(mask.any(axis=1), last, 0).astype(np.int64)


def default_buckets(max_length: int) -> tuple[int, ...]:
    """8, 12, 16, 24, 32, 48, ... below ``max_length``, then ``max_length`` itself."""
    rungs, size = [], SMALLEST_BUCKET
    while size < max_length:
        rungs.append(size)
        half_step = size + size // 2
        if half_step < max_length:
            rungs.append(half_step)
        size *= 2
    return tuple(rungs) + (int(max_length),)


def bucket_ladder(max_length: int, lengths: Sequence[int] = ()) -> tuple[int, ...]:
    """The sorted bucket lengths: ``lengths`` (``data.bucket_lengths``) or :func:`default_buckets`, always
    ending at ``max_length`` so every row fits."""
    if not lengths:
        return default_buckets(max_length)
    too_long = [int(n) for n in lengths if int(n) > max_length]
    if too_long or any(int(n) <= 0 for n in lengths):
        raise DataError(f"data.bucket_lengths={tuple(lengths)}: expected positive lengths up to "
                        f"data.max_length={max_length}")
    return tuple(sorted({int(n) for n in lengths} | {int(max_length)}))


def bucket_for(length: int, ladder: Sequence[int]) -> int:
    """The smallest bucket of ``ladder`` that holds ``length`` tokens (the largest when none does)."""
    index = int(np.searchsorted(np.asarray(ladder), max(int(length), 1), side="left"))
    return int(ladder[min(index, len(ladder) - 1)])


def group_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, window: int) -> np.ndarray:
    """``order`` with each window of ``window * batch_size`` examples sorted longest first.

    This is what transformers' ``group_by_length`` does (megabatches of 50 batches): batches hold
    examples of similar length, so they need little padding, while the shuffle across windows keeps
    the epoch random. The window holding the longest example goes first, so a run that would run out
    of memory does so at its first step. The sort is stable, so the result depends only on ``order``.
    """
    order = np.asarray(order, dtype=np.int64)
    size = max(1, int(window) * int(batch_size))
    windows = [order[start:start + size] for start in range(0, len(order), size)]
    windows = [w[np.argsort(-lengths[w], kind="stable")] for w in windows]
    longest = int(np.argmax([lengths[w[0]] for w in windows]))
    windows[0], windows[longest] = windows[longest], windows[0]
    return np.concatenate(windows)
