"""The serving decoder: :mod:`mgpt.generate`'s KV-cache loop with the sampling settings as per-row arrays.

``mgpt generate`` compiles one program per :class:`~mgpt.generate.DecodeSettings` (they are static); a server
whose requests each bring their own temperature, top-k and top-p would compile on every new value. Here
they are traced ``(B,)`` arrays, so one program per (batch, prompt length, steps) serves every request. A
row with temperature 0 takes the arg-max of the same logits, so greedy output equals ``mgpt generate``'s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mgpt.generate import init_cache, prompt_positions

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
    batch, prompt_len = input_ids.shape
    mask = jnp.concatenate([attention_mask.astype(jnp.int32), jnp.ones((batch, steps), jnp.int32)], axis=1)

    def forward(ids, positions, cache):
        return model.apply({"params": params}, ids, attention_mask=mask, position_ids=positions, cache=cache,
                           deterministic=True)

    positions = prompt_positions(attention_mask)
    logits, cache = forward(input_ids, positions, init_cache(model.spec, batch, prompt_len + steps))
    stop = jnp.asarray(stop_tokens or (-1,), jnp.int32)

    def body(carry):
        step, cache, last, position, tokens, done, keys = carry
        split = jax.vmap(jax.random.split)(keys)
        token = next_tokens(last, split[:, 1], temperature, top_k, top_p)
        token = jnp.where(done, pad_id, token)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, step))
        done = done | jnp.any(token[:, None] == stop[None, :], axis=-1)
        logits, cache = forward(token[:, None], position[:, None], cache)
        return step + 1, cache, logits[:, 0], position + 1, tokens, done, split[:, 0]

    def cond(carry):
        return (carry[0] < steps) & ~jnp.all(carry[5])

    start = (jnp.zeros((), jnp.int32), cache, logits[:, -1], positions[:, -1] + 1,
             jnp.full((batch, steps), pad_id, jnp.int32), jnp.zeros((batch,), bool), keys)
    return jax.lax.while_loop(cond, body, start)[4]
