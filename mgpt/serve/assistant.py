"""The customer-service assistant hook: an intent classifier's top label answered from a template per
label, or handed to a person when the model is not confident enough.

An experiment opts in by defining ``get_assistant()`` returning an :class:`Assistant`; ``mgpt serve`` then
adds ``POST /v1/assist`` (see ``experiments/customer_service_assistant.py``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Sequence

import numpy as np

from mgpt.config import ConfigError, import_experiment


@dataclasses.dataclass(frozen=True)
class Assistant:
    """``answers[label]`` for each label; below ``threshold`` top-label probability the reply is ``handoff``."""

    answers: Mapping[str, str]
    threshold: float
    handoff: str

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"assistant threshold must be in [0, 1], got {self.threshold}")
        if not self.handoff.strip():
            raise ConfigError("assistant hand-off message is empty")

    @classmethod
    def from_file(cls, path: str, threshold: float, handoff: str) -> "Assistant":
        """Answers from a JSON object ``{label: answer}``; a bad file fails naming it and the key."""
        try:
            with open(path, encoding="utf-8") as f:
                answers = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the answer templates: {error}") from None
        if not isinstance(answers, dict):
            raise ConfigError(f"{path}: expected a JSON object {{label: answer}}, got {type(answers).__name__}")
        for label, answer in answers.items():
            if not isinstance(answer, str) or not answer.strip():
                raise ConfigError(f"{path}: key {label!r}: expected a non-empty answer string, got {answer!r:.60}")
        return cls(answers, float(threshold), handoff)

    def check_labels(self, label_names: Sequence[str]) -> None:
        """Every label the model predicts needs an answer (checked once, at start-up)."""
        missing = [name for name in label_names if name not in self.answers]
        if missing:
            raise ConfigError(f"the assistant's answers have no entry for {len(missing)} of the model's labels, "
                              f"e.g. {missing[:3]}; expected one answer per label")

    def reply(self, probabilities: np.ndarray, label_names: Sequence[str]) -> dict:
        """The top intent, its probability, and its answer or the hand-off (confidence < threshold)."""
        top = int(np.argmax(probabilities))
        confidence = float(probabilities[top])
        handoff = confidence < self.threshold
        intent = label_names[top]
        return {"intent": intent, "confidence": confidence, "handoff": handoff,
                "answer": self.handoff if handoff else self.answers[intent]}


def load_assistant(experiment: str) -> Assistant | None:
    """The experiment file's ``get_assistant()``, or None when it defines none."""
    module = import_experiment(experiment)
    if not hasattr(module, "get_assistant"):
        return None
    assistant = module.get_assistant()
    if not isinstance(assistant, Assistant):
        raise ConfigError(f"{experiment}: get_assistant() returned {type(assistant).__name__}, expected "
                          "mgpt.serve.assistant.Assistant")
    return assistant
