"""Task objects: registry, jit-safe loss / predict, reports, word_predictions."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt.tasks import get_task
from mgpt.tasks.token_classification import word_predictions

KINDS = ("sequence_classification", "token_classification", "regression", "causal_lm")


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_registry():
    for kind in KINDS:
        task = get_task(kind)
        assert task.name == kind and task.default_mode in ("max", "min")
    with pytest.raises(ValueError, match="unknown task kind 'ner'.*sequence_classification.*causal_lm"):
        get_task("ner")


def test_sequence_classification_loss_predict_under_jit():
    task = get_task("sequence_classification")
    logits = np.array([[1.0, 3.0, 0.0], [2.0, -1.0, 0.5], [0.0, 0.0, 9.0]], np.float32)
    batch = {"labels": np.array([1, 0, 0], np.int32), "example_weight": np.array([1, 1, 0], np.float32)}
    total, count = jax.jit(task.loss)(logits, batch)
    lp = log_softmax(logits)
    np.testing.assert_allclose(float(total), -(lp[0, 1] + lp[1, 0]), rtol=1e-5)
    assert float(count) == 2
    np.testing.assert_array_equal(jax.jit(task.predict)(logits, batch), [1, 0, 2])
    report = task.report(np.array([1, 0]), np.array([1, 1]), ("neg", "pos"))
    assert task.headline(report) == pytest.approx({"accuracy": 0.5, "macro_f1": (0 + 2 / 3) / 2, "micro_f1": 0.5})
    assert task.default_metric in report


def test_regression_task():
    task = get_task("regression")
    batch = {"labels": np.array([1.0, 2.0, 0.0], np.float32), "example_weight": np.array([1, 1, 0], np.float32)}
    logits = np.array([1.5, 4.0, 100.0], np.float32)
    total, count = jax.jit(task.loss)(logits, batch)
    assert float(total) == pytest.approx(0.25 + 4.0) and float(count) == 2
    np.testing.assert_allclose(task.predict(logits[:, None], batch), logits)
    report = task.report(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), ())
    assert task.headline(report)["mse"] == pytest.approx(1 / 3)
    assert task.default_metric == "mse" and task.default_mode == "min"


def test_token_classification_task():
    task = get_task("token_classification")
    logits = np.zeros((2, 3, 2), np.float32)
    logits[0, 1, 1] = 2.0
    batch = {"labels": np.array([[-100, 1, -100], [0, 0, 0]], np.int32), "example_weight": np.array([1, 0], np.float32)}
    total, count = jax.jit(task.loss)(logits, batch)
    assert float(total) == pytest.approx(-log_softmax([0.0, 2.0])[1], rel=1e-5) and float(count) == 1
    np.testing.assert_array_equal(task.predict(logits, batch), [[0, 1, 0], [0, 0, 0]])
    report = task.report([["B-PER", "O"], ["O"]], [["B-PER", "O"], ["B-LOC"]], ())
    assert task.headline(report) == pytest.approx({"f1": 2 / 3, "precision": 1.0, "recall": 0.5, "accuracy": 2 / 3})


def test_word_predictions_maps_first_subwords_and_cut_words():
    labels = ("O", "B-PER", "I-PER", "B-LOC")
    pred = np.array([[0, 1, 2, 2, 3, 0], [0, 3, 1, 0, 0, 0]])
    word_index = np.array([[1, 2, 4], [1, -1, -1]])  # word 1 of sentence 0 spans positions 2-3
    words = word_predictions(pred, word_index, labels, num_words=np.array([3, 2]))
    # Example 1's second word was cut off by truncation: predicted "O".
    assert words == [["B-PER", "I-PER", "B-LOC"], ["B-LOC", "O"]]


def test_causal_lm_task():
    task = get_task("causal_lm")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 3, 4)).astype(np.float32)
    batch = {"labels": np.array([[2, 3, 1]], np.int32), "example_weight": np.ones(1, np.float32)}
    total, count = jax.jit(task.loss)(logits, batch)
    lp = log_softmax(logits)
    np.testing.assert_allclose(float(total), -(lp[0, 0, 3] + lp[0, 1, 1]), rtol=1e-5)
    assert float(count) == 2
    np.testing.assert_array_equal(task.predict(logits, batch), np.argmax(logits, -1))
    report = task.report((jnp.float32(6.0), jnp.float32(3.0)), None, ())
    assert report["loss"] == pytest.approx(2.0) and report["perplexity"] == pytest.approx(math.exp(2.0))
    assert task.report({"nll_sum": 3.0, "token_count": 3}, None, ())["perplexity"] == pytest.approx(math.e)
    assert task.headline(report) == pytest.approx({"loss": 2.0, "perplexity": math.exp(2.0)})


def test_causal_lm_report_from_arrays_is_next_token_accuracy():
    task = get_task("causal_lm")
    pred = np.array([[5, 7, 9, 1], [2, 2, 2, 2]])
    labels = np.array([[1, 5, 8, 9], [3, 2, -100, -100]])
    # Scored pairs: (5,5) ok, (7,8) no, (9,9) ok, (2,2) ok -> 3 of 4.
    report = task.report(pred, labels, ())
    assert report == {"token_accuracy": 0.75, "num_tokens": 4}
    report["loss"] = 1.0  # the evaluation loop adds the mean loss
    assert task.headline(report) == pytest.approx({"loss": 1.0, "perplexity": math.e, "token_accuracy": 0.75})


def test_decode_references_describe_against_a_bundle():
    labels = ("O", "B-PER", "I-PER")
    ner = SimpleNamespace(
        label_names=labels,
        word_index={"test": np.array([[1, 3], [1, -1]])},
        num_words={"test": np.array([2, 1])},
    )
    task = get_task("token_classification")
    decoded = task.decode(np.array([[0, 1, 0, 2], [0, 0, 0, 0]]), ner, "test")
    assert decoded == [["B-PER", "I-PER"], ["O"]]
    assert task.describe(decoded[0], labels) == ["B-PER", "I-PER"]
    seq = get_task("sequence_classification")
    assert seq.describe(seq.decode(np.array([1, 0]), None, "test")[0], ("neg", "pos")) == "pos"
    assert get_task("regression").describe(np.float32(0.5), ()) == 0.5
