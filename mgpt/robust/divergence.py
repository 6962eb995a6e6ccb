"""Divergences between two outputs of one model on one batch, summed over the items the task's loss counts.

Which items: one per example for classification and regression (packed rows: one per segment, weighted by
``segment_weight``), one per labelled token for tagging, one per scored next-token position for causal LMs
(position t's logits against ``labels[:, t + 1]``). Outputs are logits (softmax over classes or the vocabulary),
independent sigmoids (multi-label) or values (regression). Every function returns ``(sum, count)`` like
:mod:`mgpt.losses`, in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mgpt import losses
from mgpt.constants import IGNORE_INDEX
from mgpt.data.labels import LABEL_FLOAT, LABEL_MULTI, LABEL_NONE, LABEL_STRING, LABEL_TAGS

_SOFTMAX, _SIGMOID, _VALUE = "softmax", "sigmoid", "value"
_OUTPUTS = {LABEL_STRING: _SOFTMAX, LABEL_TAGS: _SOFTMAX, LABEL_NONE: _SOFTMAX, LABEL_MULTI: _SIGMOID,
            LABEL_FLOAT: _VALUE}


def kl_softmax(p_logits, q_logits):
    """KL(softmax(p) || softmax(q)) over the last axis."""
    log_p = jax.nn.log_softmax(jnp.asarray(p_logits, jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(jnp.asarray(q_logits, jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kl_bernoulli(p_logits, q_logits):
    """KL between independent Bernoullis sigmoid(p) and sigmoid(q), summed over the last axis."""
    p_logits, q_logits = jnp.asarray(p_logits, jnp.float32), jnp.asarray(q_logits, jnp.float32)
    log_p1, log_p0 = jax.nn.log_sigmoid(p_logits), jax.nn.log_sigmoid(-p_logits)
    log_q1, log_q0 = jax.nn.log_sigmoid(q_logits), jax.nn.log_sigmoid(-q_logits)
    return jnp.sum(jnp.exp(log_p1) * (log_p1 - log_q1) + jnp.exp(log_p0) * (log_p0 - log_q0), axis=-1)


def _probabilities(logits, output):
    logits = jnp.asarray(logits, jnp.float32)
    return jax.nn.softmax(logits, axis=-1) if output == _SOFTMAX else jax.nn.sigmoid(logits)


def _kl_probs(p, m, output):
    """KL(p || m) for probabilities (Jensen-Shannon's halves; 0 log 0 = 0)."""
    def term(a, b):
        return jnp.where(a > 0, a * (jnp.log(jnp.where(a > 0, a, 1.0)) - jnp.log(b)), 0.0)

    if output == _SOFTMAX:
        return jnp.sum(term(p, m), axis=-1)
    return jnp.sum(term(p, m) + term(1.0 - p, 1.0 - m), axis=-1)


def _broadcast(weights, shape):
    """Per-row (B,) or per-segment (B, K) weights broadcast to an item shape; None: all ones."""
    if weights is None:
        return jnp.ones(shape, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    return jnp.broadcast_to(weights.reshape(weights.shape + (1,) * (len(shape) - weights.ndim)), shape)


def _items(label_kind: str, p, q, batch):
    """``(p, q, weights)``: the outputs as items ``(N, ...)`` and one weight per item ``(N,)``."""
    if label_kind not in _OUTPUTS:
        raise ValueError(f"no divergence for label kind {label_kind!r}")
    weights = losses.example_weights(batch)
    if label_kind == LABEL_NONE:  # next-token positions
        labels = jnp.asarray(batch["labels"])[:, 1:]
        p, q = p[:, :-1], q[:, :-1]
        w = _broadcast(weights, labels.shape) * (labels != IGNORE_INDEX)
    elif label_kind == LABEL_TAGS:
        labels = jnp.asarray(batch["labels"])
        w = _broadcast(weights, labels.shape) * (labels != IGNORE_INDEX)
    elif label_kind == LABEL_FLOAT:  # (B,) or packed (B, K)
        w = _broadcast(weights, p.shape)
        return p.reshape(-1), q.reshape(-1), w.reshape(-1)
    else:  # (B, C) or packed (B, K, C)
        w = _broadcast(weights, p.shape[:-1])
    return p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1]), w.reshape(-1)


def _weighted(per_item, weights):
    return jnp.sum(jnp.where(weights > 0, per_item * weights, 0.0)), jnp.sum(weights)


def symmetric_kl(label_kind: str, p, q, batch):
    """``KL(P || Q) + KL(Q || P)`` per item (regression: the squared difference), as ``(sum, count)``."""
    output = _OUTPUTS.get(label_kind)
    p, q, w = _items(label_kind, p, q, batch)
    if output == _VALUE:
        per_item = jnp.square(jnp.asarray(p, jnp.float32) - jnp.asarray(q, jnp.float32))
    elif output == _SOFTMAX:
        per_item = kl_softmax(p, q) + kl_softmax(q, p)
    else:
        per_item = kl_bernoulli(p, q) + kl_bernoulli(q, p)
    return _weighted(per_item, w)


def jensen_shannon(label_kind: str, p, q, batch):
    """``(KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2`` per item (regression: half the squared
    difference), as ``(sum, count)``."""
    output = _OUTPUTS.get(label_kind)
    p, q, w = _items(label_kind, p, q, batch)
    if output == _VALUE:
        return _weighted(0.5 * jnp.square(jnp.asarray(p, jnp.float32) - jnp.asarray(q, jnp.float32)), w)
    pp, qq = _probabilities(p, output), _probabilities(q, output)
    m = 0.5 * (pp + qq)
    return _weighted(0.5 * (_kl_probs(pp, m, output) + _kl_probs(qq, m, output)), w)
