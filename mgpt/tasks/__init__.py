"""Task objects: loss, predictions and reports for each kind of fine-tuning."""

from __future__ import annotations

from mgpt.tasks.causal_lm import CausalLM
from mgpt.tasks.generation import Generation
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
    "generation": Generation,  # causal-LM training, evaluated by generating (mgpt.tasks.generation)
}


# The kinds whose cross-entropy can score smoothed labels (task.label_smoothing).
LABEL_SMOOTHING_KINDS = ("sequence_classification", "token_classification")


def get_task(kind: str, loss_chunk_size: int = 0, label_smoothing: float = 0.0):
    """The task object for ``kind``; an unknown kind fails listing the valid ones.

    ``task.head`` names the model head to load (``load_pretrained(..., task=task.head)``): it is
    the kind itself, except multi-label classification, which uses the sequence-classification head.
    ``loss_chunk_size`` (causal_lm only) computes the training loss a chunk of positions at a time;
    ``label_smoothing`` (classification and tagging only) smooths the cross-entropy's one-hot targets.
    """
    if kind not in TASKS:
        raise ValueError(f"unknown task kind {kind!r}: valid kinds are {', '.join(TASKS)}")
    if label_smoothing and kind not in LABEL_SMOOTHING_KINDS:
        raise ValueError(f"task.label_smoothing={label_smoothing} is for {', '.join(LABEL_SMOOTHING_KINDS)}, "
                         f"not {kind}")
    if issubclass(TASKS[kind], CausalLM):  # the causal-LM loss (generation's too) can be chunked
        return TASKS[kind](loss_chunk_size)
    if loss_chunk_size:
        raise ValueError(f"task.loss_chunk_size={loss_chunk_size} is for causal_lm only, not {kind}")
    if kind in LABEL_SMOOTHING_KINDS:
        return TASKS[kind](label_smoothing)
    return TASKS[kind]()


__all__ = ["get_task", "TASKS", "LABEL_SMOOTHING_KINDS", "word_predictions", "SequenceClassification",
           "TokenClassification", "Regression", "CausalLM", "Generation", "MultiLabelClassification"]
