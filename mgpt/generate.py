"""Text generation with a KV cache for the decoder families (GPT-2, Llama family).

:func:`generate_tokens` is one jitted program: a prefill of the (left-padded) prompts fills a fixed-size
per-layer :class:`~mgpt.models.attention.KVCache`, then a ``lax.while_loop`` emits one token per step
(greedy, or sampled with temperature / top-k / top-p) until ``max_new_tokens`` or until every sequence has
produced a stop token; a finished sequence emits ``pad_id`` from then on.

Left padding: cache slot ``s`` of row ``b`` holds the ``s``-th token of that row, pads included, so slot
order is causal order; pad slots are hidden by the attention mask and positions count real tokens only
(``cumsum(mask) - 1``). A left-padded prompt therefore generates exactly what it generates alone.

:func:`generate_text` is the host side: tokenize prompts, left-pad, run fixed-shape batches (sharded over
the mesh's ``data`` axis when a mesh is given), cut each output at its first stop token and detokenize.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mgpt.models.attention import KVCache, init_kv_cache
from mgpt.models.family import get_family

logger = logging.getLogger("mgpt")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How to pick each new token (hashable: it is a static argument of the jitted decoder)."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy (arg-max); > 0: sample from softmax(logits / temperature)
    top_k: int = 0  # sample among the k most likely tokens only; 0: no limit
    top_p: float = 1.0  # nucleus: the smallest set of most likely tokens holding >= top_p of the mass; 1: off
    stop_tokens: tuple[int, ...] = ()  # a sequence ends after emitting one of these (e.g. the EOS id)
    pad_id: int = 0  # what finished sequences emit, and what left padding is filled with

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 is off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def cache_layout(spec) -> tuple[int, int, int]:
    """``(num_layers, num_kv_heads, head_dim)`` of a decoder spec's KV cache (the family's ``kv_geometry``)."""
    family = get_family(spec.family)
    if not family.is_decoder:
        raise ValueError(f"{spec.family}: generation needs a decoder model")
    return family.kv_geometry(spec.arch)


def init_cache(spec, batch: int, max_length: int) -> tuple[KVCache, ...]:
    """An empty per-layer cache with room for ``max_length`` slots, in the model's compute dtype."""
    layers, heads, head_dim = cache_layout(spec)
    return tuple(init_kv_cache(batch, max_length, heads, head_dim, spec.compute_dtype) for _ in range(layers))


def prompt_positions(attention_mask: jax.Array) -> jax.Array:
    """Positions of a left- (or right-) padded batch: real tokens count from 0, pads get 0."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def filter_logits(logits: jax.Array, settings: DecodeSettings) -> jax.Array:
    """float32 ``logits / temperature`` with every token outside top-k and the top-p nucleus set to -inf."""
    logits = logits.astype(jnp.float32) / max(settings.temperature, 1e-6)
    vocab = logits.shape[-1]
    if 0 < settings.top_k < vocab:
        kth = jax.lax.top_k(logits, settings.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if settings.top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[..., ::-1]  # most likely first
        probs = jax.nn.softmax(ordered, axis=-1)
        # Keep a token while the mass of the tokens before it is still below top_p: the smallest prefix
        # reaching top_p (the most likely token is always kept).
        kept = (jnp.cumsum(probs, axis=-1) - probs) < settings.top_p
        threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample_next(logits: jax.Array, rng: jax.Array, settings: DecodeSettings) -> jax.Array:
    """The next token ``(B,)`` int32 from last-position logits ``(B, V)``."""
    if settings.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits, settings), axis=-1).astype(jnp.int32)


def decode_loop(params, input_ids, attention_mask, rng, pick, *, model, steps: int, stop_tokens: Sequence[int],
                pad_id: int) -> jax.Array:
    """New tokens ``(B, steps)`` for LEFT-padded prompts, by the KV-cache loop (trace it inside a jit).

    ``pick(logits (B, V), rng) -> (tokens (B,), rng)`` chooses each step's tokens and carries its PRNG state
    (one key for the batch, or one per row): the one place where decoders differ. A row emits ``pad_id`` after
    a stop token; the loop ends when every row has stopped.
    """
    batch, prompt_len = input_ids.shape
    cache = init_cache(model.spec, batch, prompt_len + steps)
    # The mask covers every cache slot: the prompt's own, then the new tokens' (always real).
    mask = jnp.concatenate([attention_mask.astype(jnp.int32), jnp.ones((batch, steps), jnp.int32)], axis=1)

    def forward(ids, positions, cache):
        return model.apply({"params": params}, ids, attention_mask=mask, position_ids=positions, cache=cache,
                           deterministic=True)

    positions = prompt_positions(attention_mask)
    logits, cache = forward(input_ids, positions, cache)
    stop = jnp.asarray(tuple(stop_tokens) or (-1,), jnp.int32)
    state = dict(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        logits=logits[:, -1],  # left padding: the last slot is every row's last real token
        position=positions[:, -1] + 1,
        tokens=jnp.full((batch, steps), pad_id, jnp.int32),
        done=jnp.zeros((batch,), bool),
        rng=rng,
    )

    def body(s):
        token, rng = pick(s["logits"], s["rng"])
        token = jnp.where(s["done"], pad_id, token)
        tokens = jax.lax.dynamic_update_slice(s["tokens"], token[:, None], (0, s["step"]))
        done = s["done"] | jnp.any(token[:, None] == stop[None, :], axis=-1)
        logits, cache = forward(token[:, None], s["position"][:, None], s["cache"])
        return dict(step=s["step"] + 1, cache=cache, logits=logits[:, 0], position=s["position"] + 1,
                    tokens=tokens, done=done, rng=rng)

    def cond(s):
        return (s["step"] < steps) & ~jnp.all(s["done"])

    return jax.lax.while_loop(cond, body, state)["tokens"]


@functools.partial(jax.jit, static_argnames=("model", "settings"))
def _decode(params, input_ids, attention_mask, rng, *, model, settings: DecodeSettings):
    def pick(logits, rng):
        rng, key = jax.random.split(rng)
        return sample_next(logits, key, settings), rng

    return decode_loop(params, input_ids, attention_mask, rng, pick, model=model, steps=settings.max_new_tokens,
                       stop_tokens=settings.stop_tokens, pad_id=settings.pad_id)


def generate_tokens(model, params: Any, input_ids, attention_mask, settings: DecodeSettings,
                    rng: Optional[jax.Array] = None) -> jax.Array:
    """New tokens ``(B, max_new_tokens)`` int32 for LEFT-padded prompts ``input_ids`` / ``attention_mask`` ``(B, P)``.

    ``model`` is an mgpt causal-LM task model (or a PEFT wrapper of one) with ``.spec``; ``rng`` seeds
    sampling (unused when greedy). After a stop token a row holds ``pad_id``.
    """
    _check_length(model.spec, np.shape(input_ids)[1], settings.max_new_tokens)
    if rng is None:
        rng = jax.random.PRNGKey(0)
    return _decode(params, input_ids, attention_mask, rng, model=model, settings=settings)


def _position_limit(spec) -> Optional[int]:
    return getattr(spec.arch, "n_positions", None)  # GPT-2's learned positions; RoPE has no hard limit


def _check_length(spec, prompt_len: int, max_new_tokens: int) -> None:
    limit = _position_limit(spec)
    if limit is not None and prompt_len + max_new_tokens > limit:
        raise ValueError(f"{spec.family}: prompt of {prompt_len} tokens + max_new_tokens={max_new_tokens} "
                         f"exceeds the model's {limit} positions")


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, length: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int32 ``(N, length)`` with every row right-aligned."""
    length = length or max(1, max((len(r) for r in rows), default=1))
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        if row:
            ids[i, length - len(row):] = row
            mask[i, length - len(row):] = 1
    return ids, mask


def until_stop(tokens: Sequence[int], stop_tokens: Sequence[int]) -> list[int]:
    """The tokens before the first stop token (all of them when there is none)."""
    out = []
    for token in tokens:
        if int(token) in stop_tokens:
            break
        out.append(int(token))
    return out


def settings_for(tokenizer, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0) -> DecodeSettings:
    """Decode settings that stop at the tokenizer's end-of-text token and pad with its pad token."""
    from mgpt.data.encode import pad_id

    eos = tokenizer.eos_token_id
    return DecodeSettings(max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=int(top_k),
                          top_p=float(top_p), stop_tokens=() if eos is None else (int(eos),),
                          pad_id=pad_id(tokenizer))


def encode_prompts(tokenizer, prompts: Sequence[str | Sequence[int]], spec, max_new_tokens: int) -> list[list[int]]:
    """Token ids of each prompt: a string is tokenized as training tokenized it (special tokens added); a
    sequence of ids is taken as it is (a chat-template rendering, which holds its special tokens already:
    tokenizing its text again would add a second BOS).

    A prompt too long for the model's positions keeps its last tokens (those next to the answer).
    """
    texts = [p for p in prompts if isinstance(p, str)]
    encoded = iter(tokenizer(texts, verbose=False)["input_ids"] if texts else ())
    rows = [list(next(encoded)) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    limit = _position_limit(spec)
    if limit is not None:
        room = limit - max_new_tokens
        if room < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {limit} positions")
        cut = sum(len(r) > room for r in rows)
        if cut:
            logger.warning("%d of %d prompts are longer than %d tokens; their first tokens were dropped",
                           cut, len(rows), room)
        rows = [r[-room:] for r in rows]
    return rows


def generate_text(model, params: Any, tokenizer, prompts: Sequence[str | Sequence[int]], settings: DecodeSettings,
                  *, batch_size: int = 8, seed: int = 0, mesh=None) -> list[str]:
    """One completion per prompt (text after the prompt, cut at the first stop token, decoded without
    special tokens, stripped). A prompt is a string or token ids (see :func:`encode_prompts`).

    Prompts are left-padded to the longest one and run in batches of ``batch_size`` (the last one padded
    with weight-0 copies) so the decoder compiles once. With a ``mesh`` every batch is split over its ``data``
    axis (multi-host aware, as evaluation batches are). Batch ``i`` samples with ``fold_in(seed, i)``.
    """
    from mgpt import parallel
    from mgpt.data.batching import Batches

    if not prompts:
        return []
    rows = encode_prompts(tokenizer, prompts, model.spec, settings.max_new_tokens)
    ids, mask = left_pad(rows, settings.pad_id)
    batches = Batches({"input_ids": ids, "attention_mask": mask}, batch_size, shuffle=False)
    outputs = []
    for index, batch in enumerate(batches.eval_batches(jax.process_index(), jax.process_count())):
        if mesh is not None:
            batch = parallel.shard_batch(batch, mesh)
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), index)
        tokens = generate_tokens(model, params, batch["input_ids"], batch["attention_mask"], settings, rng)
        # Every process gets every row, and the weights that mark the filler rows of the last batch.
        tokens, weights = parallel.to_host((tokens, batch["example_weight"]))
        outputs.extend(np.asarray(tokens)[np.asarray(weights) > 0])
    return [tokenizer.decode(until_stop(t, settings.stop_tokens), skip_special_tokens=True).strip() for t in outputs]
