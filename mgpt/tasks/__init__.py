"""Task objects: loss, predictions and reports for each kind of fine-tuning."""

from __future__ import annotations

from mgpt.tasks.causal_lm import CausalLM
from mgpt.tasks.multi_label_classification import MultiLabelClassification
from mgpt.tasks.regression import Regression
from mgpt.tasks.sequence_classification import SequenceClassification
from mgpt.tasks.token_classification import TokenClassification, word_predictions

TASKS = {
    "sequence_classification": SequenceClassification,
    "multi_label_classification": MultiLabelClassification,
    "token_classification": TokenClassification,
    "regression": Regression,
    "causal_lm": CausalLM,
}


def get_task(kind: str):
    """The task object for ``kind``; an unknown kind fails listing the valid ones.

    ``task.head`` names the model head to load (``load_pretrained(..., task=task.head)``): it is
    the kind itself, except multi-label classification, which uses the sequence-classification head.
    """
    try:
        return TASKS[kind]()
    except KeyError:
        raise ValueError(f"unknown task kind {kind!r}: valid kinds are {', '.join(TASKS)}") from None


__all__ = ["get_task", "TASKS", "word_predictions", "SequenceClassification", "TokenClassification",
           "Regression", "CausalLM", "MultiLabelClassification"]
