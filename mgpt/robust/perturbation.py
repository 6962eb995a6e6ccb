"""Perturbations of the token embeddings, one L2 ball per example over its real tokens.

A batch's tokens are grouped by example: ``groups`` ``(B, T)`` holds 0 on padding and, per row, 1 for an
unpacked row's tokens or the segment id (1..K) of a packed row's tokens. Every norm here is taken over one
group: the real tokens of one example. Padding tokens get a zero perturbation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_groups(batch) -> jax.Array:
    """``(B, T)`` int32 example id of every token within its row (0 = padding): packed rows' ``segment_ids``, else
    the attention mask (every real token of an unpacked row is example 1)."""
    if "segment_ids" in batch:
        return jnp.asarray(batch["segment_ids"], jnp.int32)
    if "attention_mask" in batch:
        return (jnp.asarray(batch["attention_mask"]) > 0).astype(jnp.int32)
    return jnp.ones(jnp.shape(batch["input_ids"]), jnp.int32)


def _per_group_sum(values, groups):
    """Sum of ``values`` ``(B, T)`` over each token's group, broadcast back to the tokens ``(B, T)``."""
    batch, length = groups.shape
    slots = length + 1  # group ids are at most T (one example per token)
    flat = (jnp.arange(batch, dtype=jnp.int32)[:, None] * slots + groups).reshape(-1)
    sums = jax.ops.segment_sum(values.reshape(-1), flat, num_segments=batch * slots)
    return sums[flat].reshape(batch, length)


def example_norms(x, groups):
    """``(B, T)``: the L2 norm of ``x`` ``(B, T, E)`` over the real tokens of each token's example (0 on padding)."""
    squares = jnp.where(groups > 0, jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1), 0.0)
    return jnp.sqrt(_per_group_sum(squares, groups))


def normalize(x, groups):
    """``x / ||x||`` per example over its real tokens; zero on padding and where an example's norm is 0."""
    norms = example_norms(x, groups)
    safe = jnp.where(norms > 0, norms, 1.0)
    scale = jnp.where((groups > 0) & (norms > 0), 1.0 / safe, 0.0)
    return x.astype(jnp.float32) * scale[..., None]


def project(delta, groups, epsilon: float):
    """``delta`` projected onto the L2 ball of radius ``epsilon`` of each example; zero on padding."""
    norms = example_norms(delta, groups)
    scale = jnp.where(norms > epsilon, epsilon / jnp.where(norms > 0, norms, 1.0), 1.0)
    return jnp.where((groups > 0)[..., None], delta * scale[..., None], 0.0)


def ascent_step(delta, gradient, groups, epsilon: float, step_size: float):
    """One projected, normalised ascent step: ``project(delta + step_size * g / ||g||)``."""
    return project(delta + step_size * normalize(gradient, groups), groups, epsilon)


def random_in_ball(rng, shape, groups, epsilon: float):
    """A random point of each example's epsilon ball: a uniform direction times ``epsilon * u``, u ~ U(0, 1)."""
    direction_key, radius_key = jax.random.split(rng)
    direction = normalize(jax.random.normal(direction_key, shape, jnp.float32), groups)
    radius = jax.random.uniform(radius_key, groups.shape + (1,), jnp.float32)  # one per slot, read per group
    radius = jnp.take_along_axis(radius[..., 0], jnp.clip(groups, 0, groups.shape[1] - 1), axis=1)
    return direction * (epsilon * radius)[..., None]


def gaussian_noise(rng, shape, groups, std: float):
    """N(0, std^2) on real tokens, zero on padding (SMART's random start)."""
    return jnp.where((groups > 0)[..., None], std * jax.random.normal(rng, shape, jnp.float32), 0.0)


def positions_in_example(groups):
    """``(B, T)`` index of each token within its example (0-based), and each example's length broadcast to its
    tokens (``(B, T)``); both 0 on padding."""
    real = (groups > 0).astype(jnp.int32)
    lengths = _per_group_sum(real.astype(jnp.float32), groups).astype(jnp.int32)
    index = jnp.arange(groups.shape[1], dtype=jnp.int32)[None, :]
    boundary = jnp.concatenate([jnp.ones_like(groups[:, :1], bool), groups[:, 1:] != groups[:, :-1]], axis=1)
    start = jax.lax.cummax(jnp.where(boundary, index, 0), axis=1)
    return jnp.where(real > 0, index - start, 0), jnp.where(real > 0, lengths, 0)


def token_cutoff_keep(rng, groups, rate: float):
    """Token cutoff (Shen et al. 2020): ``(B, T)`` float keep mask dropping each real token with probability
    ``rate`` (padding kept: it is masked anyway)."""
    drop = jax.random.bernoulli(rng, rate, groups.shape) & (groups > 0)
    return 1.0 - drop.astype(jnp.float32)


def span_cutoff_keep(rng, groups, rate: float):
    """Span cutoff: in every example one contiguous span of ``round(rate * length)`` tokens is dropped, at a
    uniformly drawn start; ``(B, T)`` float keep mask."""
    index, lengths = positions_in_example(groups)
    span = jnp.round(rate * lengths.astype(jnp.float32)).astype(jnp.int32)
    # one uniform draw per (row, group slot), read at each token's group
    draws = jax.random.uniform(rng, groups.shape, jnp.float32)
    u = jnp.take_along_axis(draws, jnp.clip(groups, 0, groups.shape[1] - 1), axis=1)
    start = jnp.floor(u * (lengths - span + 1).astype(jnp.float32)).astype(jnp.int32)
    drop = (groups > 0) & (index >= start) & (index < start + span)
    return 1.0 - drop.astype(jnp.float32)
