"""Evaluation asks what a task declares (``evaluation``, ``single_label``), never its kind or its methods."""

from types import SimpleNamespace

import numpy as np
import pytest

from mgpt.tasks import TASKS, get_task
from mgpt.train import evaluation, generation_eval


def _run(task, references):
    data = SimpleNamespace(label_names=("neg", "neu", "pos"), references=lambda split: references)
    return SimpleNamespace(task=task, data=data, config=None)  # the config is not consulted for dispatch


def test_every_task_declares_its_evaluation():
    declared = {kind: (cls.evaluation, cls.single_label) for kind, cls in TASKS.items()}
    assert declared == {
        "sequence_classification": ("predict", True),
        "multi_label_classification": ("predict", False),
        "token_classification": ("predict", True),
        "regression": ("predict", False),
        "causal_lm": ("predict", False),
        "generation": ("generate", False),
    }


def test_one_label_warning_follows_the_declaration(monkeypatch, caplog):
    references = np.array([0, 1, 2, 1])
    monkeypatch.setattr(evaluation, "run_predictions", lambda run, params, split: (np.array([1, 1, 1, 1]), 6.0, 4.0))
    task = get_task("sequence_classification")
    with caplog.at_level("WARNING", logger="mgpt"):
        report, scalars = evaluation.evaluate_split(_run(task, references), None, "validation")
    assert report["single_predicted_label"] == "neu" and scalars["loss"] == report["loss"] == 1.5
    assert report["accuracy"] == 0.5 and report["num_examples"] == 4
    # The same collapsed predictions from a task that declares no single label: no warning, no flag.
    task.single_label = False
    caplog.clear()
    with caplog.at_level("WARNING", logger="mgpt"):
        report, _ = evaluation.evaluate_split(_run(task, references), None, "validation")
    assert "single_predicted_label" not in report and "every prediction" not in caplog.text


def test_generating_tasks_are_handed_the_per_batch_loss(monkeypatch):
    monkeypatch.setattr(evaluation, "run_predictions", lambda run, params, split: (np.zeros((2, 3)), 9.0, 3.0))
    calls = []
    monkeypatch.setattr(generation_eval, "evaluate_by_generation",
                        lambda run, params, split, loss_sum, count: calls.append((split, loss_sum, count)) or ({}, {}))
    assert evaluation.evaluate_split(_run(get_task("generation"), None), "params", "test") == ({}, {})
    assert calls == [("test", 9.0, 3.0)]


def test_an_undeclared_evaluation_fails_naming_it():
    task = get_task("regression")
    task.evaluation = "beam_search"
    with pytest.raises(ValueError, match="task 'regression' declares evaluation='beam_search'; expected one of "
                                         "predict, generate"):
        evaluation.evaluate_split(_run(task, None), None, "validation")
