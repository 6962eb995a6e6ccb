"""task.label_smoothing: cross-entropy against optax.smooth_labels, for classification and tagging only."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mgpt import config as config_lib
from mgpt import losses, optim, parallel
from mgpt.config import ConfigError, DataConfig, ExperimentConfig, OptimizerConfig, ParallelConfig
from mgpt.models import load_pretrained
from mgpt.tasks import get_task
from mgpt.train import setup
from mgpt.train import state as state_lib
from mgpt.train.step import train_step
from mgpt.train.validate import validate

from fixtures_tiny import tiny_bert, write_classification_experiment

ALPHA = 0.1


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _by_hand(logits, labels, weights, alpha):
    """Sum and count of -sum_c smooth_labels(one_hot(y), alpha)_c * log p_c over valid, weighted items."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    classes = logits.shape[-1]
    valid = labels != -100
    one_hot = np.eye(classes, dtype=np.float32)[np.where(valid, labels, 0)]
    targets = np.asarray(optax.smooth_labels(one_hot, alpha), np.float64)
    per_item = -(targets * _log_softmax(logits)).sum(-1)
    w = np.broadcast_to(np.asarray(weights, np.float64).reshape(weights.shape + (1,) * (labels.ndim - 1)),
                        labels.shape) * valid
    return float((per_item * w).sum()), float(w.sum())


def test_smoothed_cross_entropy_equals_optax_smooth_labels_by_hand():
    rng = np.random.default_rng(0)
    # sequence classification: (B, C) logits, one ignored label, one padding row
    logits = rng.normal(size=(5, 4)).astype(np.float32) * 3
    labels = np.array([0, 3, -100, 1, 2])
    weights = np.array([1, 1, 1, 1, 0], np.float32)
    total, count = losses.softmax_cross_entropy(logits, labels, weights, label_smoothing=ALPHA)
    expected_sum, expected_count = _by_hand(logits, labels, weights, ALPHA)
    np.testing.assert_allclose(float(total), expected_sum, rtol=1e-5)
    assert float(count) == expected_count == 3
    # the smoothed loss is not the plain one
    plain, _ = losses.softmax_cross_entropy(logits, labels, weights)
    assert abs(float(plain) - expected_sum) > 1e-3

    # token classification: (B, T, C), -100 on padding / continuation sub-words
    logits = rng.normal(size=(3, 5, 6)).astype(np.float32)
    labels = np.array([[1, 5, -100, 0, -100], [2, -100, -100, -100, -100], [4, 4, 4, 4, 4]])
    weights = np.array([1, 1, 0], np.float32)
    total, count = jax.jit(functools.partial(losses.token_cross_entropy, label_smoothing=ALPHA))(
        logits, labels, weights)
    expected_sum, expected_count = _by_hand(logits, labels, weights, ALPHA)
    np.testing.assert_allclose(float(total), expected_sum, rtol=1e-5)
    assert float(count) == expected_count == 4


def test_zero_smoothing_is_exactly_the_plain_loss():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(4, 7, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, size=(4, 7)).astype(np.int32)).at[0, 3:].set(-100)
    weights = jnp.asarray([1.0, 0.5, 1.0, 0.0])
    # the loss as it was computed before label smoothing existed
    valid = labels != -100
    per_item = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    w = weights[:, None] * valid.astype(jnp.float32)
    old = (jnp.sum(jnp.where(w > 0, per_item * w, 0.0)), jnp.sum(w))
    for new in (losses.softmax_cross_entropy(logits, labels, weights),
                losses.softmax_cross_entropy(logits, labels, weights, label_smoothing=0.0),
                losses.token_cross_entropy(logits, labels, weights, 0.0)):
        assert float(new[0]) == float(old[0]) and float(new[1]) == float(old[1])


def _one_step(model, params, task, batch):
    optimizer = optim.make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.5, schedule="constant"), 10, params)
    mesh = parallel.make_mesh(ParallelConfig(num_devices=1))
    state, _ = state_lib.create_state(params, optimizer, 0, mesh)
    state, metrics = jax.jit(functools.partial(train_step, model=model, task=task, optimizer=optimizer))(state, batch)
    return jax.device_get(state["params"]), float(metrics["loss"])


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_sequence_classification_step_changes_with_smoothing_from_the_config(tmp_path):
    experiment = write_classification_experiment(str(tmp_path), tiny_bert(tmp_path / "model"))
    config = config_lib.apply_overrides(config_lib.load_experiment(experiment), [f"task.label_smoothing={ALPHA}"])
    run = setup.build_run(config)  # the config reaches the task
    assert run.task.label_smoothing == ALPHA
    batch = run.batches("train", 8, shuffle=True).batch_at(0)
    smoothed_params, smoothed_loss = _one_step(run.model, run.params, run.task, batch)
    plain_params, plain_loss = _one_step(run.model, run.params, get_task("sequence_classification"), batch)
    assert abs(smoothed_loss - plain_loss) > 1e-4
    assert _max_diff(smoothed_params, plain_params) > 1e-6


def test_token_classification_step_changes_with_smoothing(tmp_path):
    model, params, _, _ = load_pretrained(tiny_bert(tmp_path / "model"), task="token_classification", num_labels=5)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, size=(4, 6)).astype(np.int32)
    labels[:, 0] = labels[:, -1] = -100  # [CLS] / [SEP]
    batch = {"input_ids": rng.integers(5, 30, size=(4, 6)).astype(np.int32),
             "attention_mask": np.ones((4, 6), np.int32), "labels": labels,
             "example_weight": np.ones(4, np.float32)}
    task = get_task("token_classification", label_smoothing=ALPHA)
    smoothed_params, smoothed_loss = _one_step(model, params, task, batch)
    plain_params, plain_loss = _one_step(model, params, get_task("token_classification"), batch)
    assert abs(smoothed_loss - plain_loss) > 1e-4
    assert _max_diff(smoothed_params, plain_params) > 1e-6


@pytest.mark.parametrize("kind", ["regression", "causal_lm", "multi_label_classification"])
def test_label_smoothing_is_refused_where_it_means_nothing_here(kind):
    config = ExperimentConfig(data=DataConfig(train_file="train.csv", validation_file="dev.csv", test_file="test.csv"))
    config = config_lib.apply_overrides(config, [f"task.kind={kind}", "task.label_smoothing=0.1"])
    with pytest.raises(ConfigError, match=r"^task.label_smoothing=0.1: .*expected 0 for"):
        validate(config)
    with pytest.raises(ValueError, match="task.label_smoothing"):
        get_task(kind, label_smoothing=0.1)
    ok = config_lib.apply_overrides(config, ["task.kind=token_classification", "data.format=conll"])
    assert validate(ok).task.label_smoothing == 0.1
