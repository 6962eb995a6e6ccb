"""Sequence packing: several short examples share one full row, so little compute goes to padding.

:func:`pack_examples` packs classification, regression and tagging data (one label per segment, or per
token); :func:`pack_rows`, described first, packs causal-LM data.

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

import logging

import numpy as np

from mgpt.constants import IGNORE_INDEX
from mgpt.data.encode import pad_id
from mgpt.data.errors import DataError

logger = logging.getLogger("mgpt")


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


def _best_fit_rows(lengths: np.ndarray, max_length: int) -> list[list[int]]:
    """Rows of example indices, best-fit decreasing: longest example first, each into the fullest row it
    still fits (a new row when none has room). ``free[c]`` holds the rows with ``c`` tokens left."""
    free: list[list[int]] = [[] for _ in range(max_length + 1)]
    rows: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        room = next((c for c in range(n, max_length + 1) if free[c]), None)
        if room is None:
            rows.append([])
            row, room = len(rows) - 1, max_length
        else:
            row = free[room].pop()
        rows[row].append(int(i))
        free[room - n].append(row)
    return rows


def pack_examples(arrays: dict[str, np.ndarray], max_length: int, pad_id: int,
                  per_token_labels: bool) -> dict[str, np.ndarray]:
    """Pack right-padded classification, regression or tagging ``arrays`` (input_ids, attention_mask,
    optional token_type_ids: (N, T); labels: (N, T) with ``per_token_labels``, else (N,) or (N, C)) into
    rows of ``max_length`` tokens, best-fit decreasing, so that few tokens are padding.

    Returns input_ids / attention_mask / token_type_ids (R, T), ``segment_ids`` (R, T) (1, 2, ... per
    example, 0 on padding), and ``segment_weight`` float32 (R, K): 1 where slot k of a row holds an
    example, K being the most examples any row holds. Labels stay per token (R, T) for tagging; otherwise
    they become one per segment, (R, K) or (R, K, C), with -100 (integer labels) or 0 in empty slots.
    Positions are left to the model (they restart with every segment; see mgpt.models.layers.segments).
    """
    mask = np.asarray(arrays["attention_mask"])
    lengths = mask.sum(axis=1).astype(np.int64)
    if np.any(lengths > max_length):
        raise DataError(f"an example has {int(lengths.max())} tokens, more than max_length={max_length}")
    if np.any(lengths == 0):
        raise DataError(f"{int(np.sum(lengths == 0))} examples have no tokens; packing needs at least one per example")
    rows = _best_fit_rows(lengths, max_length)
    num_rows, slots = len(rows), max(len(members) for members in rows)
    shape = (num_rows, max_length)
    token_keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in arrays]
    if per_token_labels:
        token_keys.append("labels")
    fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}
    out = {key: np.full(shape, fill.get(key, 0), dtype=np.asarray(arrays[key]).dtype) for key in token_keys}
    out["segment_ids"] = np.zeros(shape, dtype=np.int32)
    out["segment_weight"] = np.zeros((num_rows, slots), dtype=np.float32)
    labels = np.asarray(arrays["labels"])
    if not per_token_labels:
        empty = IGNORE_INDEX if np.issubdtype(labels.dtype, np.integer) else 0
        out["labels"] = np.full((num_rows, slots) + labels.shape[1:], empty, dtype=labels.dtype)
    for r, members in enumerate(rows):
        start = 0
        for slot, i in enumerate(members):
            n = int(lengths[i])
            span = slice(start, start + n)
            for key in token_keys:
                out[key][r, span] = arrays[key][i, :n]
            out["attention_mask"][r, span] = 1
            out["segment_ids"][r, span] = slot + 1
            out["segment_weight"][r, slot] = 1.0
            if not per_token_labels:
                out["labels"][r, slot] = labels[i]
            start += n
    return out


def pack_train_split(encoded, data_cfg, tokenizer, *, split: str, where: str, per_token_labels: bool):
    """With ``data.pack``, the train split of ``encoded`` (an :class:`mgpt.data.encode.Encoded`) packed by
    :func:`pack_examples`; other splits, or no ``data.pack``: ``encoded`` unchanged. Evaluation keeps one
    example per row (bucketed), so predictions map back to examples."""
    if not data_cfg.pack or split != "train":
        return encoded
    count = len(encoded.arrays["attention_mask"])
    encoded.arrays = pack_examples(encoded.arrays, data_cfg.max_length, pad_id(tokenizer), per_token_labels)
    mask = encoded.arrays["attention_mask"]
    logger.info("%s: packed %d examples into %d rows of %d tokens (%.0f%% real, up to %d per row)", where, count,
                len(mask), mask.shape[1], 100 * float(np.mean(mask != 0)), encoded.arrays["segment_weight"].shape[1])
    return encoded
