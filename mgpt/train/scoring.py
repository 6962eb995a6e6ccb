"""Predictions of a loaded run on texts that are not in its data files, and class probabilities.

Both go through :func:`mgpt.train.evaluation.run_predictions`, the batched path of ``mgpt predict``: texts are
encoded as one more split of the run's data (:func:`mgpt.data.dataset.add_split`), exactly as a predict file is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mgpt.data.dataset import add_split
from mgpt.data.errors import DataError
from mgpt.data.labels import LABEL_STRING
from mgpt.train.evaluation import run_predictions


def add_texts(run, split: str, texts: Sequence[str], source: str) -> None:
    """Encode ``texts`` (unlabelled) as split ``split`` of ``run.data``; ``source`` names where they came from."""
    if not texts:
        raise DataError(f"{source}: no texts to predict")
    examples = [{"text": text} for text in texts]
    add_split(run.data, split, examples, run.task, run.tokenizer, run.config.data, source)


def predicted_labels(run, params: Any, split: str) -> list[str]:
    """The label name predicted for each example of ``split``, as ``mgpt predict`` writes it."""
    predictions, _, _ = run_predictions(run, params, split)
    decoded = run.task.decode(predictions, run.data, split)
    return [run.task.describe(prediction, run.data.label_names) for prediction in decoded]


def class_probabilities(run, params: Any, split: str) -> np.ndarray:
    """Softmax probabilities (N, C) of a single-label classification run for each example of ``split``."""
    if run.task.label_kind != LABEL_STRING:
        raise DataError(f"class probabilities need a classification task with one label per example; "
                        f"task.kind={run.config.task.kind!r}")
    probabilities, _, _ = run_predictions(dataclasses.replace(run, task=_Probabilities(run.task)), params, split)
    return np.asarray(probabilities, dtype=np.float64)


class _Probabilities:
    """The run's task with its predictions replaced by the softmax over the logits (the rest delegated)."""

    def __init__(self, task):
        self._task = task

    def __getattr__(self, name):
        return getattr(self._task, name)

    def predict(self, logits, batch):
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
