"""Sequence packing for causal-LM fine-tuning: several short examples share one full row.

Examples are placed in order into rows of ``max_length`` tokens (a new row starts when the next
example does not fit), so no token is cut and few are padding. Each row carries, besides
``input_ids`` / ``attention_mask`` / ``labels``:

- ``segment_ids`` int32 (R, T): 1, 2, 3, ... for the examples in the row, 0 on padding. The model
  must let a token attend only to earlier tokens of its own segment (causal and same segment id),
  or examples would see each other.
- ``position_ids`` int32 (R, T): positions restart at 0 with every segment (0 on padding), so an
  example is embedded as if it were alone.

The first token of every segment gets label -100: the loss shifts (position t predicts label
t + 1), and nothing in the previous example predicts the next one's first token. An unpacked row
never scores its first token either, so packed and unpacked data score the same tokens.
"""

from __future__ import annotations

import numpy as np

from mgpt.constants import IGNORE_INDEX
from mgpt.data.errors import DataError


def pack_rows(arrays: dict[str, np.ndarray], max_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Pack right-padded causal-LM ``arrays`` (input_ids, attention_mask, labels: (N, T)) into
    full rows; see the module docstring for the arrays returned."""
    mask = np.asarray(arrays["attention_mask"])
    lengths = mask.sum(axis=1).astype(np.int64)
    if np.any(lengths > max_length):
        raise DataError(f"an example has {int(lengths.max())} tokens, more than max_length={max_length}")
    rows: list[list[int]] = []
    used = max_length  # forces a first row
    for i, n in enumerate(lengths):
        if n == 0:
            continue  # nothing to learn from an empty example
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += int(n)
    if not rows:
        raise DataError("nothing to pack: every example is empty")
    shape = (len(rows), max_length)
    out = {
        "input_ids": np.full(shape, pad_id, dtype=np.int32),
        "attention_mask": np.zeros(shape, dtype=np.int32),
        "labels": np.full(shape, IGNORE_INDEX, dtype=np.int32),
        "segment_ids": np.zeros(shape, dtype=np.int32),
        "position_ids": np.zeros(shape, dtype=np.int32),
    }
    for r, members in enumerate(rows):
        start = 0
        for segment, i in enumerate(members, start=1):
            n = int(lengths[i])
            span = slice(start, start + n)
            out["input_ids"][r, span] = arrays["input_ids"][i, :n]
            out["attention_mask"][r, span] = 1
            out["labels"][r, span] = arrays["labels"][i, :n]
            out["labels"][r, start] = IGNORE_INDEX
            out["segment_ids"][r, span] = segment
            out["position_ids"][r, span] = np.arange(n)
            start += n
    return out
