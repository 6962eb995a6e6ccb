"""Jit-safe losses returning ``(sum, count)``.

The trainer adds sums and counts over micro-batches, devices and eval batches and divides once,
so a padded last batch or an uneven split never biases the mean. ``example_weight`` (B,) scales
each row: weight-0 padding rows add nothing to the sum or the count. Labels equal to -100 are
ignored. All arithmetic is float32 whatever the logits' dtype.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from mgpt.constants import IGNORE_INDEX


def _row_weights(weights: Optional[jnp.ndarray], shape: tuple[int, ...]) -> jnp.ndarray:
    """Broadcast per-row weights (B,) (packed rows: per example, (B, K)) to a label shape (B, ...); None means
    all ones."""
    if weights is None:
        return jnp.ones(shape, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    return jnp.broadcast_to(weights.reshape(weights.shape + (1,) * (len(shape) - weights.ndim)), shape)


def example_weights(batch) -> Optional[jnp.ndarray]:
    """The weight of each example in ``batch``: ``example_weight`` (B,), times ``segment_weight`` (B, K) when
    rows are packed (one weight per packed example; 0 on empty slots and on padding rows)."""
    weights = batch.get("example_weight")
    segments = batch.get("segment_weight")
    if segments is None:
        return weights
    segments = jnp.asarray(segments, jnp.float32)
    return segments if weights is None else jnp.asarray(weights, jnp.float32)[:, None] * segments


def softmax_cross_entropy(logits, labels, weights=None,
                          label_smoothing: float = 0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Cross-entropy of integer ``labels`` (B,) or (B, T) under ``logits`` (..., C).

    ``label_smoothing`` > 0 scores against ``optax.smooth_labels(one_hot(labels, C), label_smoothing)``
    instead of the one-hot target; 0 is the plain integer-label cross-entropy, computed as before.
    """
    labels = jnp.asarray(labels)
    valid = labels != IGNORE_INDEX
    safe = jnp.where(valid, labels, 0)  # -100 would index out of range
    logits = jnp.asarray(logits, jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(safe, logits.shape[-1], dtype=jnp.float32), label_smoothing)
        per_item = optax.softmax_cross_entropy(logits, targets)
    else:
        per_item = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    w = _row_weights(weights, labels.shape) * valid.astype(jnp.float32)
    # where(), not a product alone: 0 * inf from an ignored row would be nan.
    return jnp.sum(jnp.where(w > 0, per_item * w, 0.0)), jnp.sum(w)


def token_cross_entropy(logits, labels, weights=None,
                        label_smoothing: float = 0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-token cross-entropy: ``logits`` (B, T, C), ``labels`` (B, T) with -100 ignored (``label_smoothing``: see
    :func:`softmax_cross_entropy`)."""
    return softmax_cross_entropy(logits, labels, weights, label_smoothing)


def causal_lm_loss(logits, labels, weights=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Next-token cross-entropy: position t's logits predict ``labels[:, t + 1]``.

    ``labels`` are aligned with ``input_ids`` (not shifted); the shift happens here.
    """
    return softmax_cross_entropy(logits[:, :-1], jnp.asarray(labels)[:, 1:], weights)


def chunked_causal_lm_loss(hidden, project, labels, weights=None, chunk_size: int = 128):
    """:func:`causal_lm_loss` from final hidden states ``(B, T, E)``, never holding ``(B, T, V)`` logits.

    ``project(h)`` maps a ``(B, c, E)`` chunk to float32 logits ``(B, c, V)`` (the model's output
    projection). Positions are taken ``chunk_size`` at a time with ``lax.map``; each chunk is under
    ``jax.checkpoint``, so the backward pass recomputes its logits instead of keeping them: peak memory
    holds one chunk's logits (and their gradient), not the whole sequence's.
    """
    labels = jnp.asarray(labels)
    batch, length = labels.shape
    hidden, targets = hidden[:, :-1], labels[:, 1:]  # position t predicts token t + 1
    chunks = -(-(length - 1) // chunk_size)
    pad = chunks * chunk_size - (length - 1)  # padded positions are ignored targets
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)), constant_values=IGNORE_INDEX)
    hidden = jnp.swapaxes(hidden.reshape(batch, chunks, chunk_size, hidden.shape[-1]), 0, 1)
    targets = jnp.swapaxes(targets.reshape(batch, chunks, chunk_size), 0, 1)

    @jax.checkpoint
    def chunk_loss(h, t):
        return softmax_cross_entropy(project(h), t, weights)

    sums, counts = jax.lax.map(lambda pair: chunk_loss(*pair), (hidden, targets))
    return jnp.sum(sums), jnp.sum(counts)


def mse(pred, target, weights=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Squared error of ``pred`` vs ``target`` ((B,), or (B, K) for packed rows), summed over weighted rows."""
    target = jnp.asarray(target, jnp.float32)
    w = _row_weights(weights, target.shape).reshape(-1)
    pred = jnp.asarray(pred, jnp.float32).reshape(-1)
    target = target.reshape(-1)
    return jnp.sum(jnp.where(w > 0, w * jnp.square(pred - target), 0.0)), jnp.sum(w)


def sigmoid_binary_cross_entropy(logits, labels, weights=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Multi-label loss: ``logits`` (B, C) against multi-hot float ``labels`` (B, C).

    Each example's loss is its binary cross-entropy summed over the C labels; the count is the
    number of (weighted) examples, so the trainer's mean is per example, not per label.
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels, jnp.float32)
    per_example = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)
    w = _row_weights(weights, per_example.shape)
    return jnp.sum(jnp.where(w > 0, per_example * w, 0.0)), jnp.sum(w)


def negative_log_likelihood(log_probs, labels, weights=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """NLL of integer ``labels`` under already-normalised ``log_probs`` (..., C); -100 ignored."""
    labels = jnp.asarray(labels)
    valid = labels != IGNORE_INDEX
    safe = jnp.where(valid, labels, 0)
    picked = jnp.take_along_axis(jnp.asarray(log_probs, jnp.float32), safe[..., None], axis=-1)[..., 0]
    w = _row_weights(weights, labels.shape) * valid.astype(jnp.float32)
    return -jnp.sum(jnp.where(w > 0, picked * w, 0.0)), jnp.sum(w)
