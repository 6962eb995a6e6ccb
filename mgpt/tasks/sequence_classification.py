"""Sequence classification: one label per example, cross-entropy over (B, C) logits."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mgpt import losses, metrics
from mgpt.data.encode import class_ids, encode_texts
from mgpt.data.packing import pack_train_split
from mgpt.data.labels import LABEL_STRING


class SequenceClassification:
    """Task object for ``"sequence_classification"``; predictions are label ids (B,)."""

    name = "sequence_classification"
    head = "sequence_classification"  # the model head load_pretrained builds
    single_label = True  # one label per example: evaluation warns when every prediction is the same
    evaluation = "predict"  # evaluated from predict() over batches (mgpt.train.evaluation)
    default_metric = "accuracy"
    metric_names = ("accuracy", "macro_f1", "micro_f1", "loss")  # what an evaluation reports (the loss for every task)
    default_mode = "max"
    label_kind = LABEL_STRING  # one class per example (mgpt.data.labels)

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)  # task.label_smoothing: 0 is the plain cross-entropy

    def encode(self, examples, tokenizer, data_cfg, label_to_id, *, split, where):
        """Token arrays of one split plus int32 label ids (-100 where an example has no label)."""
        encoded = encode_texts(examples, tokenizer, data_cfg.max_length, where=where)
        encoded.arrays["labels"] = class_ids(examples, label_to_id, where)
        return pack_train_split(encoded, data_cfg, tokenizer, split=split, where=where, per_token_labels=False)

    def loss(self, logits, batch):
        """(sum, count) of cross-entropy (against smoothed labels with ``label_smoothing``) over real rows;
        logits (B, C), labels int32 (B,)."""
        return losses.softmax_cross_entropy(logits, batch["labels"], losses.example_weights(batch),
                                            self.label_smoothing)

    def predict(self, logits, batch):
        """Arg-max label ids (B,)."""
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def decode(self, predictions, data, split):
        """Host predictions of a whole split -> what :meth:`report` takes (label ids (N,))."""
        return np.asarray(predictions).astype(np.int64)

    def references(self, data, split):
        """Reference label ids (N,) of ``split`` from a DatasetBundle."""
        return data.references(split)

    def describe(self, prediction, label_names):
        """One decoded prediction for a predictions file: the label name."""
        return label_names[int(prediction)]

    def report(self, predictions, references, label_names):
        """sklearn report of predicted vs reference label ids (see metrics.classification_report)."""
        return metrics.classification_report(predictions, references, label_names)

    def headline(self, report):
        return {key: float(report[key]) for key in ("accuracy", "macro_f1", "micro_f1")}
