"""Regression: one float per example, mean squared error."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mgpt import losses, metrics
from mgpt.data.encode import encode_texts, float_targets
from mgpt.data.packing import pack_train_split
from mgpt.data.labels import LABEL_FLOAT


def _scores(logits):
    # Heads return (B,); accept (B, 1) too.
    logits = jnp.asarray(logits)
    return logits.reshape(logits.shape[0]) if logits.ndim == 2 and logits.shape[-1] == 1 else logits


class Regression:
    """Task object for ``"regression"``; predictions are float32 scores (B,)."""

    name = "regression"
    head = "regression"  # the model head load_pretrained builds
    single_label = False
    evaluation = "predict"  # evaluated from predict() over batches (mgpt.train.evaluation)
    default_metric = "mse"
    metric_names = ("mse", "rmse", "mae", "pearson", "spearman", "loss")  # what an evaluation reports (the loss for every task)
    default_mode = "min"
    label_kind = LABEL_FLOAT  # one number per example (mgpt.data.labels)

    def encode(self, examples, tokenizer, data_cfg, label_to_id, *, split, where):
        """Token arrays of one split plus float32 targets (0.0 where an example has none)."""
        encoded = encode_texts(examples, tokenizer, data_cfg.max_length, where=where)
        encoded.arrays["labels"] = float_targets(examples, where)
        return pack_train_split(encoded, data_cfg, tokenizer, split=split, where=where, per_token_labels=False)

    def loss(self, logits, batch):
        """(sum, count) of squared error over real rows; labels float32 (B,)."""
        return losses.mse(_scores(logits), batch["labels"], losses.example_weights(batch))

    def predict(self, logits, batch):
        return _scores(logits).astype(jnp.float32)

    def decode(self, predictions, data, split):
        return np.asarray(predictions, dtype=np.float64).reshape(-1)

    def references(self, data, split):
        return data.references(split)

    def describe(self, prediction, label_names=()):
        return float(prediction)

    def report(self, predictions, references, label_names=()):
        """MSE / RMSE / MAE / Pearson / Spearman (see metrics.regression_report)."""
        return metrics.regression_report(predictions, references)

    def headline(self, report):
        keys = ("mse", "rmse", "mae", "pearson", "spearman")
        return {key: float(report[key]) for key in keys if report.get(key) is not None}
