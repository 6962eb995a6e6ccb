"""Prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021) through the models' own inputs.

Prompt tuning prepends ``P`` learned vectors ``(P, E)`` to the token embeddings, passed as ``inputs_embeds``;
the attention mask gets ``P`` ones in front, token types ``P`` zeros, and per-position outputs (token
classification, causal LM, hidden states) drop the first ``P`` positions so they line up with the batch.
Prompts start from the embeddings of randomly drawn vocabulary tokens.

Prefix tuning gives every layer ``P`` learned keys and values, passed as ``prefix_key_values`` (per layer a
``(key, value)`` pair ``(B, P, heads, head_dim)``; Llama family: per key/value head), seen by every query and
never masked. Sequence positions are unchanged. Both change only the calls that take tokens (the model's
``__call__`` and ``encode``); under ``model.scan_layers`` the per-layer prefixes are stacked for the scan
by the backbone itself.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mgpt.config import ConfigError, PeftConfig
from mgpt.models.family import get_family
from mgpt.peft import method as method_lib


def embedding_table(base: Any, spec) -> jax.Array:
    """The token embedding table in ``base`` params, at the family's ``embedding_path``."""
    tree = base
    for part in get_family(spec.family).embedding_path:
        tree = tree[part]
    return tree


def _check_count(count: int) -> None:
    if count < 1:
        raise ConfigError(f"peft.num_virtual_tokens must be >= 1, got {count}")


def init_prompt(rng: jax.Array, base: Any, spec, count: int) -> dict:
    """``{"embeddings": (P, E)}`` copied from ``P`` randomly drawn vocabulary rows (scaled as the model scales
    looked-up embeddings, for Gemma)."""
    _check_count(count)
    table = embedding_table(base, spec)
    vocab = table.shape[0]
    ids = jax.random.choice(rng, vocab, (count,), replace=count > vocab)
    rows = jnp.take(table, ids, axis=0).astype(jnp.float32)
    return {"embeddings": rows * _embedding_scale(spec)}


def _embedding_scale(spec) -> float:
    return float(spec.arch.hidden_size) ** 0.5 if getattr(spec.arch, "scale_embeddings", False) else 1.0


def prompt_inputs(base: Any, prompt: dict, spec, input_ids, attention_mask, token_type_ids):
    """``(inputs_embeds, attention_mask, token_type_ids)`` with the virtual tokens in front."""
    dtype = spec.compute_dtype
    table = embedding_table(base, spec)
    tokens = jnp.take(table, input_ids, axis=0).astype(dtype)
    scale = _embedding_scale(spec)
    if scale != 1.0:  # Gemma's normaliser, rounded to the compute dtype as the backbone does
        tokens = tokens * jnp.asarray(scale, dtype)
    batch = input_ids.shape[0]
    virtual = prompt["embeddings"]
    count = virtual.shape[0]
    embeds = jnp.concatenate([jnp.broadcast_to(virtual.astype(dtype), (batch, *virtual.shape)), tokens], axis=1)
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    attention_mask = jnp.concatenate([jnp.ones((batch, count), attention_mask.dtype), attention_mask], axis=1)
    if token_type_ids is not None:
        token_type_ids = jnp.concatenate([jnp.zeros((batch, count), token_type_ids.dtype), token_type_ids], axis=1)
    return embeds, attention_mask, token_type_ids


def trim_positions(output, count: int, spec, return_hidden_states: bool):
    """Drop the virtual positions from per-position logits (and hidden states) of the model's ``__call__``."""
    per_position = spec.task in ("token_classification", "causal_lm")
    if return_hidden_states:
        logits, hidden = output
        logits = logits[:, count:] if per_position else logits
        return logits, tuple(h[:, count:] for h in hidden)
    return output[:, count:] if per_position else output


def layer_geometry(spec) -> tuple[int, int, int]:
    """``(layers, key/value heads, head_dim)`` of the backbone, for prefix key/value shapes (the family's
    ``kv_geometry``)."""
    return get_family(spec.family).kv_geometry(spec.arch)


def init_prefix(rng: jax.Array, spec, count: int, std: float) -> dict:
    """``{"key", "value"}`` of shape ``(layers, P, heads, head_dim)``, N(0, std)."""
    _check_count(count)
    layers, heads, dim = layer_geometry(spec)
    k_key, v_key = jax.random.split(rng)
    shape = (layers, count, heads, dim)
    return {"key": std * jax.random.normal(k_key, shape, jnp.float32),
            "value": std * jax.random.normal(v_key, shape, jnp.float32)}


def prefix_key_values(prefix: dict, batch: int, dtype) -> list[tuple[jax.Array, jax.Array]]:
    """Per-layer ``(key, value)`` pairs broadcast over the batch, in the compute dtype."""
    keys, values = prefix["key"].astype(dtype), prefix["value"].astype(dtype)
    return [(jnp.broadcast_to(keys[i], (batch, *keys.shape[1:])), jnp.broadcast_to(values[i], (batch, *values.shape[1:])))
            for i in range(keys.shape[0])]


def trim_backbone_output(out, count: int):
    """Drop the virtual positions from a backbone output (the model's ``encode``)."""
    hidden = None if out.hidden_states is None else tuple(h[:, count:] for h in out.hidden_states)
    return out._replace(last_hidden_state=out.last_hidden_state[:, count:], hidden_states=hidden)


# --- the registered methods: "prompt" and "prefix" ----------------------------------------------------


def _init_prompt(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    return {"prompt": init_prompt(rng, base, spec, cfg.num_virtual_tokens)}


def _apply_prompt(call: method_lib.Call) -> method_lib.Call:
    if not call.takes_tokens:
        return call
    inputs = dict(call.inputs)
    if inputs.get("inputs_embeds") is not None or inputs.get("position_ids") is not None:
        raise ValueError("prompt tuning builds inputs_embeds and positions itself; pass input_ids only")
    if inputs.get("num_segments") or inputs.get("segment_ids") is not None:
        raise ValueError("prompt tuning puts its virtual tokens in front of one example per row; it cannot "
                         "run on packed rows (set data.pack=false)")
    embeds, mask, types = prompt_inputs(call.base, call.peft["prompt"], call.spec, inputs.get("input_ids"),
                                        inputs.get("attention_mask"), inputs.get("token_type_ids"))
    inputs.update(input_ids=None, inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
    count = call.peft["prompt"]["embeddings"].shape[0]
    # perturbations of the token embeddings (mgpt.robust) never touch the virtual tokens
    if inputs.get("embeds_keep") is not None:
        inputs["embeds_keep"] = jnp.pad(inputs["embeds_keep"], ((0, 0), (count, 0)), constant_values=1)
    if inputs.get("embeds_delta") is not None:
        inputs["embeds_delta"] = jnp.pad(inputs["embeds_delta"], ((0, 0), (count, 0), (0, 0)))
    if call.method == "encode":
        finish = lambda out: trim_backbone_output(out, count)  # noqa: E731
    else:
        hidden = bool(inputs.get("return_hidden_states", False))
        finish = lambda out: trim_positions(out, count, call.spec, hidden)  # noqa: E731
    return call.replace(inputs=inputs).then(finish)


def _init_prefix(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    return {"prefix": init_prefix(rng, spec, cfg.num_virtual_tokens, cfg.init_std)}


def _apply_prefix(call: method_lib.Call) -> method_lib.Call:
    if not call.takes_tokens:
        return call
    inputs = dict(call.inputs)
    if inputs.get("prefix_key_values") is not None:
        raise ValueError("prefix tuning supplies prefix_key_values itself")
    tokens = inputs.get("input_ids")
    batch = (tokens if tokens is not None else inputs["inputs_embeds"]).shape[0]
    inputs["prefix_key_values"] = prefix_key_values(call.peft["prefix"], batch, call.spec.compute_dtype)
    return call.replace(inputs=inputs)


method_lib.register_method(method_lib.PeftMethod("prefix", _init_prefix, _apply_prefix))
method_lib.register_method(method_lib.PeftMethod("prompt", _init_prompt, _apply_prompt))
