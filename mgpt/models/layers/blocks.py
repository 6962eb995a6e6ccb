"""What every backbone shares: its inputs, its output, the attention block over the one attention function,
and running the layer stack (plain or scanned, with or without a KV cache)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mgpt.models import scan as scan_lib
from mgpt.models.attention import attention, update_kv_cache


class BackboneInputs(NamedTuple):
    """The inputs of every backbone (and of :class:`mgpt.models.heads.TaskModel`), in call order.

    ``input_ids`` ``(B, T)`` or ``inputs_embeds`` ``(B, T, E)`` (exactly one); ``attention_mask`` ``(B, T)``
    (1 = real; with a cache ``(B, S)`` over the cache slots); ``token_type_ids`` (encoders; decoders ignore
    them); ``position_ids`` ``(B, T)`` (family defaults when None; required with a cache);
    ``prefix_key_values``: optional per-layer ``(key, value)`` pairs ``(B, P, kv heads, head_dim)``;
    ``deterministic``: dropout off; ``return_hidden_states``: also return every layer's output;
    ``cache``: per-layer :class:`~mgpt.models.attention.KVCache` for decoding (decoders only);
    ``num_segments``: packed rows (see :mod:`mgpt.models.layers.segments`): ``attention_mask`` holds segment ids
    1..``num_segments``, positions restart with each segment when ``position_ids`` is None, and sequence-level
    heads return one output per segment, ``(B, num_segments, ...)``; 0 = one example per row.
    ``embeds_keep`` ``(B, T)`` and ``embeds_delta`` ``(B, T, E)`` change the token embeddings (looked up, or
    ``inputs_embeds``) before positions and token types are added: ``x * keep + delta`` (see
    :func:`perturb_token_embeddings`); adversarial training and cutoff (:mod:`mgpt.robust`) use them, so
    positions still come from ``input_ids`` as without them.
    """

    input_ids: Any = None
    attention_mask: Any = None
    token_type_ids: Any = None
    inputs_embeds: Any = None
    position_ids: Any = None
    prefix_key_values: Any = None
    deterministic: bool = True
    return_hidden_states: bool = False
    cache: Any = None
    num_segments: int = 0
    embeds_keep: Any = None
    embeds_delta: Any = None


def perturb_token_embeddings(x, inputs: BackboneInputs):
    """``x * embeds_keep + embeds_delta`` in ``x``'s dtype (each part only when given)."""
    if inputs.embeds_keep is not None:
        x = x * inputs.embeds_keep[..., None].astype(x.dtype)
    if inputs.embeds_delta is not None:
        x = x + inputs.embeds_delta.astype(x.dtype)
    return x


class BackboneOutput(NamedTuple):
    """What every backbone returns.

    ``hidden_states`` follows transformers' ``output_hidden_states``: the embedding output, then each layer's
    output (for decoders the last entry is after the final norm); None unless requested. ``pooled`` is the
    encoder pooler output, or None. ``cache``: the updated per-layer :class:`KVCache` tuple when the decoder
    was called with a cache, else None.
    """

    last_hidden_state: jax.Array
    hidden_states: Optional[tuple]
    pooled: Optional[jax.Array] = None
    cache: Optional[tuple] = None


def check_inputs(inputs: BackboneInputs, label: str, num_layers: int, decoder: bool = True) -> None:
    """The checks every backbone makes on its inputs (``label`` names the model in the message)."""
    if (inputs.input_ids is None) == (inputs.inputs_embeds is None):
        raise ValueError(f"{label}: pass exactly one of input_ids and inputs_embeds")
    if inputs.cache is not None:
        if not decoder:
            raise ValueError(f"{label}: decoding with a KV cache needs a decoder model")
        if inputs.position_ids is None:
            raise ValueError(f"{label}: decoding with a cache needs the position_ids of the new tokens")
        if inputs.num_segments:
            raise ValueError(f"{label}: packed rows (num_segments) are for training, not for decoding with a cache")
    prefix = inputs.prefix_key_values
    if prefix is not None and len(prefix) != num_layers:
        raise ValueError(f"{label}: {len(prefix)} prefix key/value pairs for {num_layers} layers")


def attention_block(module, q, k, v, key_mask, *, deterministic: bool, dropout_rate: float, causal: bool = True,
                    prefix_kv=None, cache=None, scale: Optional[float] = None, sliding_window: Optional[int] = None,
                    implementation: str = ""):
    """Attention of ``q`` ``(B, T, H, D)`` over ``k``/``v`` ``(B, T, K, D)`` (``K`` key/value heads) inside
    ``module`` (which draws the dropout key). Returns ``(out (B, T, H, D), cache)``.

    With a ``cache`` (decoding) the new keys/values are written first and the queries attend over every
    filled slot; the cache keeps ``K`` heads. Keys, values and ``prefix_kv`` (given per key/value head) are
    repeated for grouped-query attention.
    """
    q_positions = None
    if cache is not None:
        cache, filled, q_positions = update_kv_cache(cache, k, v)
        k, v = cache.key, cache.value
        key_mask = filled if key_mask is None else jnp.logical_and(filled, key_mask.astype(bool))
    groups = q.shape[2] // k.shape[2]  # kv head j serves query heads j*groups ..
    if groups > 1:
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    prefix_key = prefix_value = None
    if prefix_kv is not None:
        prefix_key, prefix_value = (jnp.repeat(t, groups, axis=2) if groups > 1 else t for t in prefix_kv)
    rng = module.make_rng("dropout") if not deterministic and dropout_rate > 0 else None
    out = attention(q, k, v, key_mask, causal=causal, sliding_window=sliding_window, prefix_key=prefix_key,
                    prefix_value=prefix_value, q_positions=q_positions, scale=scale, dropout_rate=dropout_rate,
                    dropout_rng=rng, deterministic=deterministic, implementation=implementation or None)
    return out, cache


class LayerModule(nn.Module):
    """The fields of a decoder layer and of its attention: the arch, the layer's index, the compute dtype
    and the attention implementation."""

    arch: Any
    layer_idx: int = 0
    dtype: Any = jnp.float32
    attention_impl: str = ""


def pre_norm_residual(x, attend, feed_forward, norms: tuple, cache=None):
    """``x + attend(norm_1(x))`` then ``+ feed_forward(norm_2(x))``: a pre-norm decoder layer.

    ``attend(h) -> (out, cache)``; returns ``x``, or ``(x, cache)`` when decoding with a cache (the layer
    contract of :func:`mgpt.models.scan.run_layers`).
    """
    out, cache = attend(norms[0](x))
    x = x + out
    x = x + feed_forward(norms[1](x))
    return x if cache is None else (x, cache)


class DecoderBackbone(nn.Module):
    """Fields and the layer stack of a decoder backbone (GPT-2, the Llama family).

    ``remat``/``scan_layers`` (see :mod:`mgpt.models.scan`) change how the layers run, not the result;
    scanned, the layers' params are one stack (``Family.scan_stack``) instead of ``<stack>_0 .. _{L-1}``.
    """

    arch: Any
    dtype: Any = jnp.float32
    remat: str = "none"
    scan_layers: bool = False
    attention_impl: str = ""

    def layer_stack(self, layer_cls: type, deterministic_argnum: int):
        """One :class:`LayerModule` ``layer_cls`` per layer (scanned: one, its params stacked); call in setup.

        ``deterministic_argnum``: position of ``deterministic`` in the layer's ``__call__`` (self is 0).
        """
        layer = scan_lib.layer_class(layer_cls, self.remat, deterministic_argnum, self.scan_layers)
        if self.scan_layers:
            return layer(self.arch, 0, self.dtype, self.attention_impl)
        return [layer(self.arch, i, self.dtype, self.attention_impl) for i in range(self.arch.num_layers)]


def run_decoder_layers(layers, x, shared: tuple, inputs: BackboneInputs, final_norm, scanned: bool,
                       num_layers: int) -> BackboneOutput:
    """Run a decoder's layers over the embedded ``x`` (see :func:`mgpt.models.scan.run_layers`), then its
    final norm; hidden states as transformers reports them (the last one after the final norm)."""
    first = x
    x, outputs, new_cache = scan_lib.run_layers(
        layers, x, shared, inputs.deterministic, inputs.prefix_key_values, inputs.cache,
        keep_hidden=inputs.return_hidden_states, scanned=scanned, length=num_layers)
    x = final_norm(x)
    all_hidden = (first, *outputs[:-1], x) if inputs.return_hidden_states else None
    return BackboneOutput(x, all_hidden, None, new_cache)
