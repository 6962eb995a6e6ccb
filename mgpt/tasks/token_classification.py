"""Token classification (NER): per-sub-word logits, reported per word with seqeval."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from mgpt import losses, metrics


def word_predictions(pred_ids, word_index, label_names: Sequence[str], num_words) -> list[list[str]]:
    """Turn sub-word predictions (N, T) into per-example word tags.

    Word ``w`` of example ``i`` takes the tag predicted at its first sub-word
    ``word_index[i, w]``; words without one (cut off by truncation) are ``"O"``.
    ``num_words[i]`` is the number of words of example ``i``.
    """
    pred_ids = np.asarray(pred_ids)
    word_index = np.asarray(word_index)
    if len(pred_ids) != len(word_index) or len(num_words) != len(word_index):
        raise ValueError(
            f"{len(pred_ids)} predictions, {len(word_index)} word_index rows and {len(num_words)} word counts differ"
        )
    out = []
    for i, count in enumerate(num_words):
        positions = word_index[i, : int(count)]
        out.append([label_names[int(pred_ids[i, p])] if p >= 0 else "O" for p in positions])
    return out


class TokenClassification:
    """Task object for ``"token_classification"``; predictions are tag ids (B, T) per sub-word."""

    name = "token_classification"
    default_metric = "f1"
    default_mode = "max"

    def loss(self, logits, batch):
        """(sum, count) of per-token cross-entropy; logits (B, T, C), labels (B, T), -100 ignored."""
        return losses.token_cross_entropy(logits, batch["labels"], batch.get("example_weight"))

    def predict(self, logits, batch):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def decode(self, predictions, data, split):
        """Sub-word tag ids (N, T) -> per-example word tags, via the bundle's word_index."""
        return word_predictions(predictions, data.word_index[split], data.label_names, data.num_words[split])

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
