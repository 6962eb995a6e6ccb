"""Losses vs hand-computed numpy; reports vs hand-computed scores."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import losses, metrics


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def assert_pair(result, expected_sum, expected_count):
    total, count = result
    assert total.dtype == jnp.float32 and count.dtype == jnp.float32
    np.testing.assert_allclose(float(total), expected_sum, rtol=1e-5, atol=1e-6)
    assert float(count) == expected_count


# ---------------------------------------------------------------- losses


def test_cross_entropy_two_equal_logits_is_log2():
    assert_pair(losses.softmax_cross_entropy(jnp.zeros((1, 2)), jnp.array([1])), math.log(2), 1)


def test_cross_entropy_weights_and_ignored_labels():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0], [5.0, -2.0, 0.0]], np.float32)
    labels = np.array([0, 2, -100, 1])
    weights = np.array([1.0, 1.0, 1.0, 0.0], np.float32)  # the last row only pads the batch
    lp = log_softmax(logits)
    expected = -(lp[0, 0] + lp[1, 2])  # row 2 ignored (-100), row 3 has weight 0
    assert_pair(losses.softmax_cross_entropy(logits, labels, weights), expected, 2)
    # bf16 logits are promoted: the result is still float32.
    total, count = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, weights)
    assert total.dtype == jnp.float32 and float(count) == 2


def test_token_cross_entropy_masks_tokens_and_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    labels = np.array([[1, 4, -100, -100], [0, 0, 3, -100], [2, 2, 2, 2]])
    weights = np.array([1, 1, 0], np.float32)
    lp = log_softmax(logits)
    expected = -(lp[0, 0, 1] + lp[0, 1, 4] + lp[1, 0, 0] + lp[1, 1, 0] + lp[1, 2, 3])
    assert_pair(jax.jit(losses.token_cross_entropy)(logits, labels, weights), expected, 5)


def test_causal_lm_loss_shifts_by_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
    labels = np.array([[3, 1, 5, 2], [4, 0, -100, -100]])  # aligned with input_ids
    lp = log_softmax(logits)
    # Position t predicts labels[t + 1]; the last position predicts nothing.
    expected = -(lp[0, 0, 1] + lp[0, 1, 5] + lp[0, 2, 2] + lp[1, 0, 0])
    assert_pair(losses.causal_lm_loss(logits, labels, np.ones(2, np.float32)), expected, 4)
    assert_pair(losses.causal_lm_loss(logits, labels, np.array([0.0, 1.0], np.float32)), -lp[1, 0, 0], 1)


def test_mse_and_nll():
    pred = np.array([1.0, 2.0, 3.0, 10.0], np.float32)
    target = np.array([0.5, 2.0, 5.0, 0.0], np.float32)
    weights = np.array([1, 1, 1, 0], np.float32)
    assert_pair(losses.mse(pred, target, weights), 0.25 + 0.0 + 4.0, 3)
    log_probs = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], np.float32))
    labels = np.array([0, 1, -100])
    assert_pair(losses.negative_log_likelihood(log_probs, labels), -(math.log(0.5) + math.log(0.6)), 2)
    assert_pair(losses.negative_log_likelihood(log_probs, labels, np.array([0, 1, 1], np.float32)), -math.log(0.6), 1)


def test_weight_zero_row_with_infinite_logit_adds_nothing():
    logits = np.array([[0.0, 0.0], [np.inf, 0.0]], np.float32)
    assert_pair(losses.softmax_cross_entropy(logits, np.array([0, 1]), np.array([1, 0], np.float32)), math.log(2), 1)


# ---------------------------------------------------------------- reports


def test_classification_report_by_hand():
    ref = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    report = metrics.classification_report(np.array(pred), np.array(ref), ("a", "b", "c", "d"))
    json.dumps(report)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["micro_f1"] == pytest.approx(4 / 6)
    # per-class F1: a = 0.5 (p 1/2, r 1/2), b = 0.8 (p 2/3, r 1), c = 2/3 (p 1, r 1/2), d = 0 (absent)
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3 + 0) / 4)
    assert report["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert report["per_class"]["c"]["precision"] == 1.0 and report["per_class"]["c"]["recall"] == 0.5
    assert report["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert report["labels"] == ["a", "b", "c", "d"]
    assert isinstance(report["confusion_matrix"][0][0], int) and isinstance(report["accuracy"], float)


REF = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"], ["B-PER", "O", "B-LOC", "I-LOC"]]
PRED = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"], ["B-PER", "O", "B-LOC", "O"]]


def test_entity_report_by_hand():
    report = metrics.entity_report(PRED, REF)
    json.dumps(report)
    # Reference entities: PER x2, LOC x2, ORG x1. Predicted: PER x2, ORG, LOC(2..2) (wrong span).
    # Correct: 3 of 4 predicted, 3 of 5 reference.
    assert report["precision"] == pytest.approx(3 / 4)
    assert report["recall"] == pytest.approx(3 / 5)
    assert report["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert report["accuracy"] == pytest.approx(9 / 11)
    assert report["per_type"]["PER"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2})
    assert report["per_type"]["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2})
    assert report["macro"]["f1"] == pytest.approx(2 / 3)
    assert report["micro"]["f1"] == pytest.approx(report["f1"])


def test_entity_report_is_strict():
    # An entity opened by I- is not an entity in strict IOB2 mode (lenient conlleval would count it).
    pred = [PRED[0], ["O", "I-ORG", "O"], PRED[2]]
    report = metrics.entity_report(pred, REF)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 5)


def test_entity_report_length_mismatch():
    with pytest.raises(ValueError, match="sentence 1"):
        metrics.entity_report([["O"], ["O"]], [["O"], ["O", "O"]])


def test_regression_report_by_hand():
    report = metrics.regression_report(np.array([1.0, 2.0, 3.0, 4.0]), [1.0, 3.0, 2.0, 5.0])
    json.dumps(report)
    # errors 0, -1, 1, -1
    assert report["mse"] == pytest.approx(0.75)
    assert report["rmse"] == pytest.approx(math.sqrt(0.75))
    assert report["mae"] == pytest.approx(0.75)
    # pearson = 5.5 / sqrt(5 * 8.75); spearman = 1 - 6 * 2 / (4 * 15)
    assert report["pearson"] == pytest.approx(5.5 / math.sqrt(43.75))
    assert report["spearman"] == pytest.approx(0.8)
    constant = metrics.regression_report([2.0, 2.0], [1.0, 3.0])
    assert constant["pearson"] is None and constant["mse"] == pytest.approx(1.0)


def test_single_predicted_label_flags_a_collapsed_classifier():
    assert metrics.single_predicted_label([["O", "O"], ["O"]], [["O", "B-x"], ["O"]]) == "O"
    assert metrics.single_predicted_label(np.array([2, 2, 2]), np.array([0, 2, 1])) == 2
    assert metrics.single_predicted_label([["O", "B-x"], ["O"]], [["O", "B-x"], ["O"]]) is None
    assert metrics.single_predicted_label([1, 1], [1, 1]) is None  # one-class references: nothing to flag


def test_evaluation_report_names_the_collapsed_label(monkeypatch, caplog):
    from types import SimpleNamespace

    from mgpt.tasks import get_task
    from mgpt.train import evaluation

    references = np.array([0, 1, 2, 1])
    data = SimpleNamespace(label_names=("neg", "neu", "pos"), references=lambda split: references)
    run = SimpleNamespace(task=get_task("sequence_classification"), data=data,
                          config=SimpleNamespace(task=SimpleNamespace(kind="sequence_classification")))
    monkeypatch.setattr(evaluation, "run_predictions", lambda run, params, split: (np.array([1, 1, 1, 1]), 4.0, 4.0))
    with caplog.at_level("WARNING", logger="mgpt"):
        report, _ = evaluation.evaluate_split(run, None, "validation")
    assert report["single_predicted_label"] == "neu"
    assert "every prediction is 'neu'" in caplog.text
    monkeypatch.setattr(evaluation, "run_predictions", lambda run, params, split: (references, 4.0, 4.0))
    report, _ = evaluation.evaluate_split(run, None, "validation")
    assert "single_predicted_label" not in report
