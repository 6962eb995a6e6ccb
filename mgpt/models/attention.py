"""The one attention function every model family uses.

Shapes follow ``jax.nn.dot_product_attention``: queries ``(B, T, H, D)``, keys/values ``(B, S, H, D)``.

Masking is expressed as a boolean ``(B, 1, T, S')`` array built from three independent pieces:

* ``key_mask`` ``(B, S)``: which keys are real tokens (the batch's ``attention_mask``);
* ``causal``: query at position ``p`` may only see keys at positions ``<= p``. Positions default to
  ``arange`` and are *bottom-right aligned* when ``S > T`` (the queries are the last ``T`` keys), which is
  what a decode step over a cache needs; pass ``q_positions`` / ``kv_positions`` to override. With a
  ``sliding_window`` ``W`` the query also sees only keys at positions ``> p - W`` (Mistral);
* prefix keys/values ``(B, P, H, D)`` (prefix tuning): prepended to every query's view, never causally
  masked, optionally with their own ``prefix_mask`` ``(B, P)``.

Softmax always runs in float32. Masked logits are set to a large *finite* negative number, so a row with no
visible key (e.g. an all-padding filler row of the last batch) yields a uniform average instead of NaN.

KV cache hooks: :class:`KVCache`, :func:`init_kv_cache` and :func:`update_kv_cache` keep a fixed-size
per-layer cache. A decode step writes its new keys/values with :func:`update_kv_cache`, then calls
:func:`attention` on the whole cache with the returned ``key_mask`` and ``q_positions`` (see the
function's docstring). The model modules do not wire the cache yet; the attention core already supports it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# jax uses the same idea: finite so fully masked rows stay finite; 0.7 leaves room for adding a bias.
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


class KVCache(NamedTuple):
    """A fixed-size key/value cache for one attention layer.

    ``key``/``value``: ``(B, S_max, H, D)``; ``index``: int32 scalar, how many positions are filled.
    """

    key: Array
    value: Array
    index: Array


def init_kv_cache(batch: int, max_length: int, num_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
    """An empty cache with room for ``max_length`` positions."""
    shape = (batch, max_length, num_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


def update_kv_cache(cache: KVCache, key: Array, value: Array) -> tuple[KVCache, Array, Array]:
    """Write ``key``/``value`` ``(B, T, H, D)`` at the cache's index.

    Returns ``(new_cache, key_mask, q_positions)``: ``key_mask`` ``(B, S_max)`` marks the filled slots
    (AND it with the batch's own key padding mask when there is one) and ``q_positions`` ``(T,)`` are the
    positions of the new queries; pass both to :func:`attention` with ``causal=True`` and
    ``kv_positions=None`` (the cache slots are positions ``0..S_max-1``).
    """
    start = (0, cache.index, 0, 0)
    new_key = jax.lax.dynamic_update_slice(cache.key, key.astype(cache.key.dtype), start)
    new_value = jax.lax.dynamic_update_slice(cache.value, value.astype(cache.value.dtype), start)
    steps = key.shape[1]
    new_index = cache.index + steps
    batch, max_length = cache.key.shape[:2]
    filled = jnp.arange(max_length) < new_index
    key_mask = jnp.broadcast_to(filled[None, :], (batch, max_length))
    q_positions = cache.index + jnp.arange(steps)
    return KVCache(new_key, new_value, new_index), key_mask, q_positions


def attention_mask_4d(
    key_mask: Optional[Array],
    *,
    batch: int,
    q_len: int,
    kv_len: int,
    causal: bool,
    q_positions: Optional[Array] = None,
    kv_positions: Optional[Array] = None,
    prefix_mask: Optional[Array] = None,
    prefix_len: int = 0,
    sliding_window: Optional[int] = None,
) -> Array:
    """The boolean ``(B, 1, T, P + S)`` mask (True = may attend) described in the module docstring."""
    if key_mask is None:
        allowed = jnp.ones((batch, 1, 1, kv_len), bool)
    elif q_len == kv_len and jnp.issubdtype(key_mask.dtype, jnp.integer):
        # Self-attention over an integer mask: values are segment ids (0 = padding). A 0/1 padding mask
        # is the one-segment case; packed rows carry 1, 2, ... so one example never sees another.
        # Padding queries keep seeing every real key, as with a plain padding mask.
        q_seg = key_mask[:, None, :, None]
        k_seg = key_mask[:, None, None, :]
        allowed = jnp.logical_and(k_seg > 0, jnp.logical_or(q_seg == k_seg, q_seg == 0))
    else:
        allowed = key_mask.astype(bool)[:, None, None, :]
    if causal:
        if q_positions is None:
            q_positions = jnp.arange(q_len) + (kv_len - q_len)  # bottom-right aligned
        if kv_positions is None:
            kv_positions = jnp.arange(kv_len)
        qp = jnp.asarray(q_positions)
        kp = jnp.asarray(kv_positions)
        qp = qp[None, :] if qp.ndim == 1 else qp  # (B|1, T)
        kp = kp[None, :] if kp.ndim == 1 else kp  # (B|1, S)
        causal_ok = kp[:, None, None, :] <= qp[:, None, :, None]  # (B|1, 1, T, S)
        if sliding_window is not None:
            causal_ok = jnp.logical_and(causal_ok, kp[:, None, None, :] > qp[:, None, :, None] - sliding_window)
        allowed = jnp.logical_and(allowed, causal_ok)
    allowed = jnp.broadcast_to(allowed, (batch, 1, q_len, kv_len))
    if prefix_len:
        if prefix_mask is None:
            prefix_ok = jnp.ones((batch, 1, q_len, prefix_len), bool)
        else:
            prefix_ok = jnp.broadcast_to(prefix_mask.astype(bool)[:, None, None, :], (batch, 1, q_len, prefix_len))
        allowed = jnp.concatenate([prefix_ok, allowed], axis=-1)
    return allowed


def attention(
    q: Array,
    k: Array,
    v: Array,
    key_mask: Optional[Array] = None,
    *,
    causal: bool = False,
    sliding_window: Optional[int] = None,
    prefix_key: Optional[Array] = None,
    prefix_value: Optional[Array] = None,
    prefix_mask: Optional[Array] = None,
    q_positions: Optional[Array] = None,
    kv_positions: Optional[Array] = None,
    scale: Optional[float] = None,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    deterministic: bool = True,
    implementation: Optional[str] = None,
) -> Array:
    """Multi-head scaled dot-product attention; returns ``(B, T, H, D)`` in ``v``'s dtype.

    Args:
      q: queries ``(B, T, H, D)``.
      k, v: keys and values ``(B, S, H, D)`` (self-attention: ``S == T``; decode: the whole cache).
      key_mask: ``(B, S)``, 1/True for real keys; None means all keys are real. In self-attention an
        integer mask may hold segment ids (packed rows: 1, 2, ... per example, 0 = padding).
      causal: apply the causal mask by position (see module docstring for the alignment rule).
      sliding_window: with ``causal``, each query sees only the last ``sliding_window`` positions (itself included).
      prefix_key, prefix_value: optional ``(B, P, H, D)`` prepended keys/values (prefix tuning), always
        visible to every query; ``prefix_mask`` ``(B, P)`` can hide some of them.
      q_positions, kv_positions: ``(T,)``/``(B, T)`` and ``(S,)``/``(B, S)`` positions for the causal mask.
      scale: logit scale; default ``D ** -0.5``.
      dropout_rate, dropout_rng, deterministic: dropout on the attention probabilities (as the PyTorch
        reference models do); only applied when ``not deterministic and dropout_rate > 0``.
      implementation: forwarded to ``jax.nn.dot_product_attention`` (None/"xla" or "cudnn").
    """
    batch, q_len, num_heads, head_dim = q.shape
    kv_len = k.shape[1]
    if (prefix_key is None) != (prefix_value is None):
        raise ValueError("attention: prefix_key and prefix_value must be given together")
    prefix_len = 0
    if prefix_key is not None:
        if prefix_key.shape[0] != batch or prefix_key.shape[2:] != (num_heads, head_dim):
            raise ValueError(
                f"attention: prefix keys have shape {prefix_key.shape}, "
                f"expected (B={batch}, P, H={num_heads}, D={head_dim})"
            )
        prefix_len = prefix_key.shape[1]
        k = jnp.concatenate([prefix_key.astype(k.dtype), k], axis=1)
        v = jnp.concatenate([prefix_value.astype(v.dtype), v], axis=1)
    mask = attention_mask_4d(
        key_mask,
        batch=batch,
        q_len=q_len,
        kv_len=kv_len,
        causal=causal,
        q_positions=q_positions,
        kv_positions=kv_positions,
        prefix_mask=prefix_mask,
        prefix_len=prefix_len,
        sliding_window=sliding_window,
    )
    if scale is None:
        scale = head_dim**-0.5
    if deterministic or dropout_rate == 0.0:
        # The library kernel (XLA, or cuDNN flash attention when asked) computes softmax in float32.
        plain_causal = causal and not prefix_len and q_positions is None and kv_positions is None
        if implementation == "cudnn" and plain_causal and sliding_window is None and q_len == kv_len:
            # Told the mask is causal, cuDNN skips the blocks above the diagonal; padding stays a mask.
            padding = attention_mask_4d(key_mask, batch=batch, q_len=q_len, kv_len=kv_len, causal=False)
            return jax.nn.dot_product_attention(q, k, v, mask=padding, scale=scale, is_causal=True,
                                                implementation="cudnn")
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=implementation or None)
    if dropout_rng is None:
        raise ValueError("attention: dropout_rng is required when dropout is active")
    return _attention_with_dropout(q, k, v, mask, scale, dropout_rate, dropout_rng)


def _attention_with_dropout(q, k, v, mask, scale, rate, rng):
    """Explicit attention path used only in training with attention dropout (the fused kernel has none)."""
    logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    keep = jax.random.bernoulli(rng, 1.0 - rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - rate), 0.0).astype(v.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs, v)
