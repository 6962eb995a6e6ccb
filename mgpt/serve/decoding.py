"""The serving decoder: :func:`mgpt.generate.decode_loop` with the sampling settings as per-row arrays.

``mgpt generate`` compiles one program per :class:`~mgpt.generate.DecodeSettings` (they are static); a server
whose requests each bring their own temperature, top-k and top-p would compile on every new value. Here
they are traced ``(B,)`` arrays, so one program per (batch, prompt length, steps) serves every request. A
row with temperature 0 takes the arg-max of the same logits, so greedy output equals ``mgpt generate``'s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mgpt.generate import decode_loop

TRACES = {"decode_rows": 0}  # compilations of decode_rows (its Python body runs once per trace)


def row_filtered_logits(logits, temperature, top_k, top_p):
    """float32 ``logits / temperature`` per row, with tokens outside each row's top-k (0: off) and top-p
    nucleus (1: off) at -inf; ``logits`` ``(B, V)``, the settings ``(B,)``."""
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)[:, None]
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]  # most likely first
    vocab = logits.shape[-1]
    kth = jnp.take_along_axis(ordered, jnp.clip(top_k - 1, 0, vocab - 1)[:, None], axis=-1)
    kth = jnp.where((top_k > 0)[:, None], kth, -jnp.inf)
    probs = jax.nn.softmax(jnp.where(ordered < kth, -jnp.inf, ordered), axis=-1)
    # the smallest most-likely prefix holding top_p of the mass (its first token always stays)
    kept = (jnp.cumsum(probs, axis=-1) - probs) < top_p[:, None]
    nucleus = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((logits < kth) | (logits < nucleus), -jnp.inf, logits)


def next_tokens(logits, keys, temperature, top_k, top_p):
    """``(B,)`` int32: arg-max where a row's temperature is 0, else a sample with that row's own key."""
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = row_filtered_logits(logits, temperature, top_k, top_p)
    sampled = jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys, filtered).astype(jnp.int32)
    return jnp.where(temperature == 0.0, greedy, sampled)


@functools.partial(jax.jit, static_argnames=("model", "steps", "stop_tokens", "pad_id"))
def decode_rows(params, input_ids, attention_mask, keys, temperature, top_k, top_p, *, model, steps: int,
                stop_tokens: tuple[int, ...], pad_id: int):
    """New tokens ``(B, steps)`` for LEFT-padded prompts; ``keys`` ``(B, 2)`` seed each row's sampling.
    A row stops after a stop token (then emits ``pad_id``); the loop ends when every row has stopped."""
    TRACES["decode_rows"] += 1

    def pick(logits, keys):  # each row splits its own key, so a row's tokens do not depend on its batch
        split = jax.vmap(jax.random.split)(keys)
        return next_tokens(logits, split[:, 1], temperature, top_k, top_p), split[:, 0]

    return decode_loop(params, input_ids, attention_mask, keys, pick, model=model, steps=steps,
                       stop_tokens=stop_tokens, pad_id=pad_id)
