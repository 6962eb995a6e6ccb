"""Sliding windows for token classification of documents longer than the model.

A document's words are cut into windows of whole words that fit ``max_length`` (with the
tokenizer's special tokens); consecutive windows overlap by at most ``stride`` sub-word tokens.
Each word is predicted (and trained on) in exactly one window: the one where it has the most
context, i.e. the most sub-words on its shorter side. So a word in an overlap is taken from the
window where it sits further from the edge, never from a window's margin. Evaluation maps the
rows back to whole documents (``row_example`` and ``word_offset``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mgpt.data.encode import Encoded, encode_tokens
from mgpt.data.errors import DataError


def plan_windows(pieces: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Word ranges ``[(start, end), ...]`` covering a document whose words have ``pieces`` sub-words.

    Each window holds as many whole words as fit ``budget`` sub-words (at least one word, which
    the tokenizer truncates if it alone is too long). The next window starts as early as possible
    with at most ``stride`` sub-words of overlap, and always after the previous start.
    """
    n = len(pieces)
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and (end == start or used + pieces[end] <= budget):
            used += pieces[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            return windows
        next_start, overlap = end, 0
        while next_start - 1 > start and overlap + pieces[next_start - 1] <= stride:
            next_start -= 1
            overlap += pieces[next_start]
        start = next_start


def assign_owners(pieces: Sequence[int], windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each word, the window giving it the most context: ``min(sub-words before it, sub-words
    after it)`` within the window; ties go to the earlier window."""
    cumulative = np.concatenate([[0], np.cumsum(pieces)])
    owner = np.full(len(pieces), -1, dtype=np.int64)
    best = np.full(len(pieces), -1, dtype=np.int64)
    for k, (start, end) in enumerate(windows):
        for word in range(start, end):
            context = min(cumulative[word] - cumulative[start], cumulative[end] - cumulative[word + 1])
            if context > best[word]:
                owner[word], best[word] = k, context
    return owner


def encode_token_windows(
    examples: Sequence[dict],
    tokenizer,
    max_length: int,
    label_to_id: Mapping[str, int],
    stride: int,
    *,
    label_all_subwords: bool = False,
    where: str = "",
) -> Encoded:
    """Token classification with sliding windows: one row per window (see module docstring).

    ``word_index[r, j]`` is the position of word ``word_offset[r] + j`` of example
    ``row_example[r]`` in row ``r`` when that row predicts it, else -1; ``num_words`` counts
    each example's words.
    """
    if not examples:
        raise DataError(f"{where or 'data'}: no examples to encode")
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if not 0 <= stride < budget:
        raise DataError(f"data.stride={stride} must be in [0, {budget}): max_length={max_length} minus the "
                        f"tokenizer's {max_length - budget} special tokens")
    # Whole documents, only to count each word's sub-words (verbose=False: no "too long" warning).
    pieces_batch = tokenizer([list(e["tokens"]) for e in examples], is_split_into_words=True,
                             add_special_tokens=False, verbose=False)
    rows, owned, row_example, word_offset = [], [], [], []
    for i, example in enumerate(examples):
        pieces = np.bincount([w for w in pieces_batch.word_ids(i) if w is not None],
                             minlength=len(example["tokens"])).tolist()
        windows = plan_windows(pieces, budget, stride)
        owner = assign_owners(pieces, windows)
        for k, (start, end) in enumerate(windows):
            row = {"tokens": list(example["tokens"][start:end])}
            if "tags" in example:
                row["tags"] = list(example["tags"][start:end])
            rows.append(row)
            owned.append(owner[start:end] == k)
            row_example.append(i)
            word_offset.append(start)
    encoded = encode_tokens(rows, tokenizer, max_length, label_to_id, label_all_subwords=label_all_subwords,
                            where=where, owned=owned)
    encoded.num_words = np.asarray([len(e["tokens"]) for e in examples], dtype=np.int32)
    encoded.row_example = np.asarray(row_example, dtype=np.int32)
    encoded.word_offset = np.asarray(word_offset, dtype=np.int32)
    return encoded
