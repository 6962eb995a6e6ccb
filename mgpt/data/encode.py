"""Tokenize examples into fixed-length, right-padded numpy arrays.

Every encoder returns an :class:`Encoded` whose ``arrays`` follow the Batch contract:
``input_ids`` / ``attention_mask`` (and ``token_type_ids`` when the tokenizer produces them) int32
``(N, max_length)`` plus ``labels``. Truncation is never silent: one warning per call reports how
many examples were cut.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Optional, Sequence

import numpy as np

from mgpt.constants import IGNORE_INDEX
from mgpt.data.errors import DataError
from mgpt.data.records import check_float32

logger = logging.getLogger("mgpt")


@dataclasses.dataclass
class Encoded:
    """The arrays of one split plus what encoding had to drop."""

    arrays: dict[str, np.ndarray]
    num_truncated: int = 0  # examples longer than max_length
    word_index: Optional[np.ndarray] = None  # token classification: (N, max_words) first sub-word per word, -1 = none
    num_words: Optional[np.ndarray] = None  # token classification: (N,) words per example
    words_lost: int = 0  # token classification: words cut off by truncation (predicted "O")
    row_example: Optional[np.ndarray] = None  # sliding windows: (N_rows,) the example each row comes from
    word_offset: Optional[np.ndarray] = None  # sliding windows: (N_rows,) the example's word at row word 0
    prompt_ids: Optional[list[list[int]]] = None  # chat: each example's generation prompt (mgpt.data.chat)


def pad_id(tokenizer) -> int:
    """The id that fills padding: the pad token, else end-of-text, else 0 (masked out anyway)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0  # masked out anyway


def _fill(rows: Sequence[Sequence[int]], max_length: int, value: int) -> np.ndarray:
    """Right-pad variable-length rows into an int32 (N, max_length) array."""
    out = np.full((len(rows), max_length), value, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _base_arrays(batch, tokenizer, max_length: int) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / token_type_ids (if returned) from a tokenizer output."""
    arrays = {
        "input_ids": _fill(batch["input_ids"], max_length, pad_id(tokenizer)),
        "attention_mask": _fill(batch["attention_mask"], max_length, 0),
    }
    if "token_type_ids" in batch:
        arrays["token_type_ids"] = _fill(batch["token_type_ids"], max_length, 0)
    return arrays


def warn_truncated(count: int, total: int, max_length: int, where: str, extra: str = "") -> None:
    """One warning: ``count`` of ``total`` examples (of ``where``) were cut to ``max_length`` tokens."""
    if count:
        place = f" in {where}" if where else ""
        logger.warning(
            "%d of %d examples%s are longer than max_length=%d tokens and were truncated%s",
            count, total, place, max_length, extra,
        )


def _num_truncated(batch) -> int:
    # Fast tokenizers keep what truncation cut off in Encoding.overflowing.
    if batch.encodings is None:
        raise DataError("mgpt needs a fast (Rust-backed) transformers tokenizer; got a slow one")
    return sum(1 for encoding in batch.encodings if encoding.overflowing)


def _lookup(label_to_id: Mapping[str, int], label: str, where: str) -> int:
    try:
        return label_to_id[label]
    except KeyError:
        raise DataError(
            f"{where or 'data'}: label {label!r} is not in the label list {sorted(label_to_id)}"
        ) from None


def encode_texts(examples: Sequence[dict], tokenizer, max_length: int, *, where: str = "") -> Encoded:
    """Texts into ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``), without labels: the
    task adds them (:func:`class_ids`, :func:`float_targets`, :func:`multi_hot`).

    Examples with a ``"text_pair"`` are encoded as sentence pairs; long pairs are truncated
    longest-first.
    """
    if not examples:
        raise DataError(f"{where or 'data'}: no examples to encode")
    texts = [e["text"] for e in examples]
    pairs = [e["text_pair"] for e in examples] if "text_pair" in examples[0] else None
    batch = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    arrays = _base_arrays(batch, tokenizer, max_length)
    truncated = _num_truncated(batch)
    warn_truncated(truncated, len(examples), max_length, where)
    return Encoded(arrays=arrays, num_truncated=truncated)


# Unlabelled examples (files to predict on) get an ignored label: -100, 0.0 for a float target (whose
# loss on such a split means nothing and is not reported), or the empty label set.


def class_ids(examples: Sequence[dict], label_to_id: Mapping[str, int], where: str = "") -> np.ndarray:
    """int32 (N,) id of each example's ``"label"``; -100 where it has none."""
    ids = [_lookup(label_to_id, e["label"], where) if "label" in e else IGNORE_INDEX for e in examples]
    return np.asarray(ids, dtype=np.int32)


def float_targets(examples: Sequence[dict], where: str = "") -> np.ndarray:
    """float32 (N,) of each example's numeric ``"label"``; 0.0 where it has none.

    A label that is not finite in float32 (NaN, inf, or e.g. 1e39, which overflows) fails here, naming
    the example, rather than turning the loss NaN later; the readers already check labels they read.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        targets = np.asarray([float(e.get("label", 0.0)) for e in examples], dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(targets))
    if bad.size:
        value = examples[bad[0]]["label"]
        check_float32(float(value), value, f"{where or 'data'}: example {bad[0] + 1} of {len(examples)}")
    return targets


def multi_hot(examples: Sequence[dict], label_to_id: Mapping[str, int], where: str = "") -> np.ndarray:
    """float32 (N, C) multi-hot rows from each example's list of labels."""
    hot = np.zeros((len(examples), len(label_to_id)), dtype=np.float32)
    for i, example in enumerate(examples):
        for label in example.get("label", ()):
            hot[i, _lookup(label_to_id, label, where)] = 1.0
    return hot


def _inside(tag: str) -> str:
    """The tag a non-first sub-word of a word tagged ``tag`` gets: B-X -> I-X."""
    return "I-" + tag[2:] if tag.startswith("B-") else tag


def encode_tokens(
    examples: Sequence[dict],
    tokenizer,
    max_length: int,
    label_to_id: Mapping[str, int],
    *,
    label_all_subwords: bool = False,
    where: str = "",
    owned: Optional[Sequence[Sequence[bool]]] = None,
) -> Encoded:
    """Token classification over pre-split words (``{"tokens", "tags"}`` examples).

    The first sub-word of each word carries the word's tag; other sub-words and special tokens
    get -100, unless ``label_all_subwords`` (then every sub-word is labelled, B-X becoming I-X
    after the first). ``word_index[i, w]`` is the position of word ``w``'s first sub-word, or -1
    when truncation (or a tokenizer that yields no pieces) removed it; such words are predicted "O".
    ``owned[i][w]`` False (sliding windows: another window predicts that word) leaves word ``w``
    of example ``i`` unlabelled and out of ``word_index``.
    """
    if not examples:
        raise DataError(f"{where or 'data'}: no examples to encode")
    batch = tokenizer(
        [list(e["tokens"]) for e in examples], is_split_into_words=True, truncation=True, max_length=max_length
    )
    truncated = _num_truncated(batch)  # also checks the tokenizer is a fast one (word_ids needs it)
    arrays = _base_arrays(batch, tokenizer, max_length)
    num_words = np.asarray([len(e["tokens"]) for e in examples], dtype=np.int32)
    word_index = np.full((len(examples), max(1, int(num_words.max()))), -1, dtype=np.int32)
    labels = np.full((len(examples), max_length), IGNORE_INDEX, dtype=np.int32)
    words_lost = 0
    words_empty = 0
    for i, example in enumerate(examples):
        tags = example.get("tags")  # absent in files to predict on: labels stay -100
        if tags is not None and len(tags) != len(example["tokens"]):
            raise DataError(f"{where or 'data'}: example {i} has {len(example['tokens'])} tokens but {len(tags)} tags")
        mine = np.ones(num_words[i], dtype=bool) if owned is None else np.asarray(owned[i], dtype=bool)
        first = np.full(num_words[i], -1, dtype=np.int32)  # every word's first sub-word, owned or not
        previous = None
        for position, word in enumerate(batch.word_ids(i)):
            if word is None:
                previous = None
                continue
            if word != previous:
                first[word] = position
                if tags is not None and mine[word]:
                    labels[i, position] = _lookup(label_to_id, tags[word], where)
            elif label_all_subwords and tags is not None and mine[word]:
                labels[i, position] = _lookup(label_to_id, _inside(tags[word]), where)
            previous = word
        word_index[i, : num_words[i]] = np.where(mine, first, -1)
        seen = first >= 0
        last_seen = int(np.max(np.nonzero(seen)[0])) if seen.any() else -1
        missing = np.nonzero(~seen & mine)[0]
        cut = int(np.sum(missing > last_seen)) if batch.encodings[i].overflowing else 0
        words_lost += cut
        words_empty += len(missing) - cut
    warn_truncated(
        truncated, len(examples), max_length, where,
        f"; {words_lost} words past the cut are predicted as 'O' in evaluation",
    )
    if words_empty:
        logger.warning(
            "%d words%s produced no sub-word tokens and are predicted as 'O' in evaluation",
            words_empty, f" in {where}" if where else "",
        )
    arrays["labels"] = labels
    return Encoded(arrays=arrays, num_truncated=truncated, word_index=word_index, num_words=num_words,
                   words_lost=words_lost)


def encode_causal_lm(examples: Sequence[dict], tokenizer, max_length: int, *, where: str = "") -> Encoded:
    """Causal language modelling: ``labels`` equal ``input_ids`` (unshifted; -100 on padding).

    The tokenizer's end-of-text token is appended so the model learns to stop. With a
    ``"text_pair"`` the text is a prompt and only the pair (the completion) is scored; when too
    long, the prompt is shortened first.
    """
    if not examples:
        raise DataError(f"{where or 'data'}: no examples to encode")
    eos = tokenizer.eos_token_id
    rows, label_rows = [], []
    truncated = 0
    texts = [e["text"] for e in examples]
    prompts = tokenizer(texts, verbose=False)["input_ids"]
    if "text_pair" in examples[0]:
        completions = tokenizer([" " + e["text_pair"] for e in examples], add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
    else:
        completions = None
    for i, prompt in enumerate(prompts):
        if completions is None:
            ids = list(prompt)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            scored = list(ids)
        else:
            target = list(completions[i]) + ([eos] if eos is not None else [])
            ids = list(prompt) + target
            scored = [IGNORE_INDEX] * len(prompt) + target
            if len(ids) > max_length:  # shorten the prompt first, keeping the scored completion
                keep = max(0, max_length - len(target))
                ids = list(prompt)[:keep] + target
                scored = [IGNORE_INDEX] * keep + target
        if len(ids) > max_length or len(ids) < len(prompt) + (0 if completions is None else len(completions[i])):
            truncated += 1
        rows.append(ids[:max_length])
        label_rows.append(scored[:max_length])
    warn_truncated(truncated, len(examples), max_length, where)
    return Encoded(arrays=lm_arrays(rows, label_rows, max_length, tokenizer), num_truncated=truncated)


def lm_arrays(rows: Sequence[Sequence[int]], label_rows: Sequence[Sequence[int]], max_length: int,
              tokenizer) -> dict[str, np.ndarray]:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (-100 on padding) from token rows."""
    return {
        "input_ids": _fill(rows, max_length, pad_id(tokenizer)),
        "attention_mask": _fill([[1] * len(r) for r in rows], max_length, 0),
        "labels": _fill(label_rows, max_length, IGNORE_INDEX),
    }
