"""Token classification (NER): per-sub-word logits, reported per word with seqeval."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from mgpt import losses, metrics
from mgpt.data.encode import encode_tokens
from mgpt.data.labels import LABEL_TAGS
from mgpt.data.packing import pack_train_split
from mgpt.data.windows import encode_token_windows


def word_predictions(pred_ids, word_index, label_names: Sequence[str], num_words, row_example=None,
                     word_offset=None) -> list[list[str]]:
    """Turn sub-word predictions (N, T) into per-example word tags.

    Word ``w`` of example ``i`` takes the tag predicted at its first sub-word
    ``word_index[i, w]``; words without one (cut off by truncation) are ``"O"``.
    ``num_words[i]`` is the number of words of example ``i``.

    Sliding windows (rows are windows, see mgpt.data.windows): row ``r`` belongs to example
    ``row_example[r]`` and its ``word_index[r, j]`` places word ``word_offset[r] + j``.
    """
    pred_ids = np.asarray(pred_ids)
    word_index = np.asarray(word_index)
    if row_example is None:
        if len(pred_ids) != len(word_index) or len(num_words) != len(word_index):
            raise ValueError(f"{len(pred_ids)} predictions, {len(word_index)} word_index rows and "
                             f"{len(num_words)} word counts differ")
        row_example, word_offset = np.arange(len(word_index)), np.zeros(len(word_index), dtype=np.int64)
    elif len(pred_ids) != len(word_index) or len(row_example) != len(word_index):
        raise ValueError(f"{len(pred_ids)} predictions, {len(word_index)} word_index rows and "
                         f"{len(row_example)} row_example entries differ")
    out = [["O"] * int(count) for count in num_words]
    for r, (i, offset) in enumerate(zip(row_example, word_offset)):
        words = out[int(i)]
        for j, position in enumerate(word_index[r, : max(0, len(words) - int(offset))]):
            if position >= 0:
                words[int(offset) + j] = label_names[int(pred_ids[r, position])]
    return out


class TokenClassification:
    """Task object for ``"token_classification"``; predictions are tag ids (B, T) per sub-word."""

    name = "token_classification"
    head = "token_classification"  # the model head load_pretrained builds
    single_label = True  # one tag per word: evaluation warns when every predicted tag is the same
    evaluation = "predict"  # evaluated from predict() over batches (mgpt.train.evaluation)
    default_metric = "f1"
    metric_names = ("f1", "precision", "recall", "accuracy", "loss")  # what an evaluation reports (the loss for every task)
    default_mode = "max"
    label_kind = LABEL_TAGS  # one IOB2 tag per word (mgpt.data.labels)

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)  # task.label_smoothing: 0 is the plain cross-entropy

    def encode(self, examples, tokenizer, data_cfg, label_to_id, *, split, where):
        """Sub-word arrays of one split with each word's tag on its first sub-word (or on every
        sub-word with ``data.label_all_subwords``); with ``data.stride`` > 0 one row per window; with
        ``data.pack`` the train rows are packed (tags stay per token)."""
        if data_cfg.stride > 0:
            encoded = encode_token_windows(examples, tokenizer, data_cfg.max_length, label_to_id, data_cfg.stride,
                                           label_all_subwords=data_cfg.label_all_subwords, where=where)
        else:
            encoded = encode_tokens(examples, tokenizer, data_cfg.max_length, label_to_id,
                                    label_all_subwords=data_cfg.label_all_subwords, where=where)
        return pack_train_split(encoded, data_cfg, tokenizer, split=split, where=where, per_token_labels=True)

    def loss(self, logits, batch):
        """(sum, count) of per-token cross-entropy (against smoothed labels with ``label_smoothing``); logits
        (B, T, C), labels (B, T), -100 ignored."""
        return losses.token_cross_entropy(logits, batch["labels"], batch.get("example_weight"), self.label_smoothing)

    def predict(self, logits, batch):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def decode(self, predictions, data, split):
        """Sub-word tag ids (N, T) -> per-example word tags, via the bundle's word_index."""
        windows = getattr(data, "row_example", {}).get(split), getattr(data, "word_offset", {}).get(split)
        return word_predictions(predictions, data.word_index[split], data.label_names, data.num_words[split],
                                *windows)

    def references(self, data, split):
        """Per-example word tags (IOB2) as read from the file."""
        return data.references(split)

    def describe(self, prediction, label_names=()):
        return list(prediction)

    def report(self, predictions, references, label_names=()):
        """seqeval entity report; ``predictions`` / ``references`` are per-example word tag lists
        (see :func:`word_predictions`)."""
        return metrics.entity_report(predictions, references)

    def headline(self, report):
        return {key: float(report[key]) for key in ("f1", "precision", "recall", "accuracy")}
