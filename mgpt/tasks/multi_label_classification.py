"""Multi-label classification: any subset of C labels per example; sigmoid and binary cross-entropy.

The model is the sequence-classification head with C outputs (``head``); labels are multi-hot
float32 (B, C). A label is predicted when its sigmoid exceeds 0.5 (its logit is positive).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mgpt import losses, metrics
from mgpt.data.encode import encode_texts, multi_hot
from mgpt.data.packing import pack_train_split
from mgpt.data.labels import LABEL_MULTI


class MultiLabelClassification:
    """Task object for ``"multi_label_classification"``; predictions are multi-hot int32 (B, C)."""

    name = "multi_label_classification"
    head = "sequence_classification"  # (B, C) logits; the loss, not the head, makes it multi-label
    single_label = False
    evaluation = "predict"  # evaluated from predict() over batches (mgpt.train.evaluation)
    default_metric = "micro_f1"
    metric_names = ("subset_accuracy", "micro_f1", "macro_f1", "loss")  # what an evaluation reports (the loss for every task)
    default_mode = "max"
    label_kind = LABEL_MULTI  # any subset of the classes per example (mgpt.data.labels)

    def encode(self, examples, tokenizer, data_cfg, label_to_id, *, split, where):
        """Token arrays of one split plus float32 multi-hot labels (N, C)."""
        encoded = encode_texts(examples, tokenizer, data_cfg.max_length, where=where)
        encoded.arrays["labels"] = multi_hot(examples, label_to_id, where)
        return pack_train_split(encoded, data_cfg, tokenizer, split=split, where=where, per_token_labels=False)

    def loss(self, logits, batch):
        """(sum, count): binary cross-entropy summed over labels, counted per real example."""
        return losses.sigmoid_binary_cross_entropy(logits, batch["labels"], losses.example_weights(batch))

    def predict(self, logits, batch):
        """Multi-hot (B, C): 1 where sigmoid(logit) > 0.5."""
        return (jnp.asarray(logits) > 0).astype(jnp.int32)

    def decode(self, predictions, data, split):
        return np.asarray(predictions).astype(np.int64)

    def references(self, data, split):
        """Multi-hot reference labels (N, C) of ``split``."""
        return data.references(split)

    def describe(self, prediction, label_names):
        """The predicted label names of one example."""
        return [label_names[i] for i in np.nonzero(np.asarray(prediction))[0]]

    def report(self, predictions, references, label_names):
        """sklearn multi-label report (see metrics.multi_label_report)."""
        return metrics.multi_label_report(predictions, references, label_names)

    def headline(self, report):
        return {key: float(report[key]) for key in ("subset_accuracy", "micro_f1", "macro_f1")}
