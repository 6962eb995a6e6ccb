"""Llama-family decoders in Flax Linen: Llama 1/2/3, Mistral, Qwen2/2.5 and Gemma share this one implementation.

The architectures agree on: pre-norm blocks with RMSNorm (float32 math), rotary position embeddings (the
``rotate_half`` convention of transformers), grouped-query attention, a gated MLP (``down(act(gate) * up)``)
and a final RMSNorm. :class:`LlamaArch` records where they differ:

* biases: Llama's ``attention_bias``/``mlp_bias``; Qwen2 always has q/k/v biases and no o_proj bias;
* Gemma: embeddings scaled by ``sqrt(hidden)``, RMSNorm weight applied as ``(1 + w)``, gelu-tanh MLP;
* Mistral (and Qwen2 with ``use_sliding_window``): a sliding attention window;
* tied or untied LM head; RoPE scaling ("linear", "llama3").

Param tree (under the task model's ``"backbone"``), kernels ``(in, out)``::

    embed_tokens/embedding (V, E)
    layers_{i}/self_attn/{q_proj,k_proj,v_proj,o_proj}/{kernel[,bias]}
    layers_{i}/mlp/{gate_proj,up_proj,down_proj}/{kernel[,bias]}
    layers_{i}/{input_layernorm,post_attention_layernorm}/scale      norm/scale
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mgpt.models import scan as scan_lib
from mgpt.models.attention import attention, update_kv_cache
from mgpt.models.gpt2 import BackboneOutput, activation_fn
from mgpt.models.partitioning import EMBEDDING, NORM, constrain_hidden, dense_inits, named

SUPPORTED_ROPE = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class LlamaArch:
    """The hyperparameters mgpt uses, read from a transformers Llama/Mistral/Qwen2/Gemma config (hashable)."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    activation: str
    rms_norm_eps: float
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    tie_word_embeddings: bool
    gemma_norm: bool  # RMSNorm output * (1 + weight), weight initialised at 0
    scale_embeddings: bool  # embeddings * sqrt(hidden_size)
    rope_theta: float
    rope_scaling: tuple  # sorted (key, value) pairs of the RoPE parameters besides rope_theta
    sliding_windows: tuple  # per layer: window length or None
    attention_dropout: float
    classifier_dropout: float
    initializer_range: float
    token_classification_bias: bool = True
    qk_norm: bool = False  # RMSNorm over head_dim on each query/key head before RoPE (Qwen3)
    fused_qkv: bool = False  # one qkv_proj holding q, k, v in this order (Phi-3)
    fused_gate_up: bool = False  # one gate_up_proj holding gate, up in this order (Phi-3)
    rotary_dim: int = 0  # RoPE on the first rotary_dim dims of each head; 0: all of head_dim (Phi-3: partial)
    resid_dropout: float = 0.0  # on the attention and MLP outputs before each residual add (Phi-3)

    @property
    def rope_type(self) -> str:
        return dict(self.rope_scaling).get("rope_type", "default")

    @classmethod
    def from_hf(cls, config, dropout: Optional[float] = None, partial_rotary: bool = False) -> "LlamaArch":
        """Read a transformers config of one of the Llama-family model types; ``dropout`` overrides every rate.

        ``partial_rotary``: the family's RoPE honours ``partial_rotary_factor`` (Phi-3); else a factor != 1 fails."""
        family = config.model_type
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        if heads % kv_heads:
            raise ValueError(f"{family} config: num_attention_heads={heads} is not a multiple of "
                             f"num_key_value_heads={kv_heads}")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if getattr(config, "use_bidirectional_attention", False):
            raise ValueError(f"{family} config: use_bidirectional_attention=True is not supported (mgpt is causal)")
        activation_fn(config.hidden_act)
        theta, scaling, rotary_factor = _rope_parameters(config)
        if rotary_factor != 1.0 and not partial_rotary:
            raise ValueError(f"{config.model_type} config: partial_rotary_factor != 1 is not supported")
        windows = _sliding_windows(config, family)
        classifier_dropout = getattr(config, "classifier_dropout", None)
        if classifier_dropout is None:  # the fallback chain of GenericForTokenClassification
            classifier_dropout = getattr(config, "hidden_dropout", None)
        if classifier_dropout is None:
            classifier_dropout = 0.1
        rates = {"attention_dropout": float(getattr(config, "attention_dropout", 0.0) or 0.0),
                 "classifier_dropout": float(classifier_dropout)}
        if dropout is not None:
            rates = {name: float(dropout) for name in rates}
        attention_bias = bool(getattr(config, "attention_bias", False))
        return cls(
            family=family,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=config.intermediate_size,
            activation=config.hidden_act,
            rms_norm_eps=float(config.rms_norm_eps),
            qkv_bias=True if family == "qwen2" else (attention_bias and family != "mistral"),
            o_bias=attention_bias and family in ("llama", "gemma"),
            mlp_bias=bool(getattr(config, "mlp_bias", False)) and family == "llama",
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            gemma_norm=family == "gemma",
            scale_embeddings=family == "gemma",
            rope_theta=theta,
            rope_scaling=scaling,
            sliding_windows=windows,
            initializer_range=config.initializer_range,
            token_classification_bias=bool(getattr(config, "token_classification_bias", True)),
            rotary_dim=int(head_dim * rotary_factor) if rotary_factor != 1.0 else 0,
            **rates,
        )


def _rope_parameters(config) -> tuple[float, tuple, float]:
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params:  # configs written before rope_parameters existed
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    if set(params) & set(getattr(config, "layer_types", None) or ()):
        raise ValueError(f"{config.model_type} config: per-layer RoPE parameters are not supported")
    kind = params["rope_type"]
    if kind not in SUPPORTED_ROPE:
        raise ValueError(f"{config.model_type} config: rope_type={kind!r} is not supported; "
                         f"mgpt supports {SUPPORTED_ROPE}")
    if kind == "llama3" and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = config.max_position_embeddings
    theta = float(params.pop("rope_theta"))
    rotary_factor = float(params.pop("partial_rotary_factor", 1.0) or 1.0)
    return theta, tuple(sorted(params.items())), rotary_factor


def _sliding_windows(config, family: str) -> tuple:
    window = getattr(config, "sliding_window", None)
    layers = config.num_hidden_layers
    if family == "mistral":  # MistralModel windows every layer when sliding_window is set
        return (window,) * layers
    layer_types = getattr(config, "layer_types", None)
    if family == "qwen2" and window is not None and layer_types:
        return tuple(window if kind == "sliding_attention" else None for kind in layer_types)
    return (None,) * layers


def rope_inv_freq(arch: LlamaArch) -> np.ndarray:
    """Inverse frequencies ``(rotary_dim // 2,)`` in float32, with the configured scaling, as transformers does."""
    dim = arch.rotary_dim or arch.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(arch.rope_theta) ** exponent)).astype(np.float32)
    params = dict(arch.rope_scaling)
    kind = params.get("rope_type", "default")
    if kind == "linear":
        inv_freq = inv_freq / np.float32(params["factor"])
    elif kind == "llama3":
        factor = np.float32(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        old_len = float(params["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
        smooth = ((np.float32(old_len) / wavelen - np.float32(low)) / np.float32(high - low)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled)
    return np.asarray(inv_freq, np.float32)


def rope_cos_sin(positions, inv_freq: np.ndarray):
    """``cos``/``sin`` ``(B, T, D)`` in float32 for integer ``positions`` ``(B, T)``."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """Rotate ``x`` ``(B, T, H, D)`` by position: ``x * cos + rotate_half(x) * sin`` (cos/sin in x's dtype).

    cos/sin narrower than ``D`` rotate only the first dims of each head and pass the rest (partial RoPE)."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    dim = cos.shape[-1]
    x, rest = x[..., :dim], x[..., dim:]
    half = dim // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return jnp.concatenate([x * cos + rotated * sin, rest], axis=-1)


def default_positions(attention_mask, batch: int, length: int):
    """Cumulative positions from 0 over real tokens (``arange`` for right padding); ``arange`` without a mask."""
    if attention_mask is None:
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32)[None, :], (batch, length))
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def _dense(features: int, arch: LlamaArch, dtype, name: str, use_bias: bool, axes: tuple = (None, None)) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,  # master weights stay float32
        name=name,
        **dense_inits(arch.initializer_range, axes),  # logical axis names for the sharding rules
    )


class RMSNorm(nn.Module):
    """``x / rms(x)`` in float32, then times ``scale`` (Llama) or ``1 + scale`` (Gemma)."""

    eps: float
    gemma: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.gemma else nn.initializers.ones
        scale = self.param("scale", named(init, NORM), (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        if self.gemma:  # GemmaRMSNorm multiplies in float32, then casts
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)
        return scale.astype(self.dtype) * normed.astype(self.dtype)  # LlamaRMSNorm casts, then multiplies


class LlamaAttention(nn.Module):
    arch: LlamaArch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, cos, sin, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        batch, length, _ = x.shape
        heads, kv_heads, dim = arch.num_heads, arch.num_kv_heads, arch.head_dim

        def project(name, count, bias):
            dense = _dense(count * dim, arch, self.dtype, name, bias, axes=("embed", "heads"))
            return dense(x).reshape(batch, length, count, dim)

        if arch.fused_qkv:
            qkv = project("qkv_proj", heads + 2 * kv_heads, arch.qkv_bias)
            q, k, v = jnp.split(qkv, [heads, heads + kv_heads], axis=2)
        else:
            q, k, v = (project(name, count, arch.qkv_bias)
                       for name, count in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads)))
        if arch.qk_norm:
            q = RMSNorm(arch.rms_norm_eps, dtype=self.dtype, name="q_norm")(q)
            k = RMSNorm(arch.rms_norm_eps, dtype=self.dtype, name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q_positions = None
        if cache is not None:  # decoding: the cache keeps kv heads (rotated keys); attend over every filled slot
            cache, filled, q_positions = update_kv_cache(cache, k, v)
            k, v = cache.key, cache.value
            key_mask = filled if key_mask is None else jnp.logical_and(filled, key_mask.astype(bool))
        groups = heads // kv_heads  # grouped-query attention: kv head j serves query heads j*groups..
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        prefix_key = prefix_value = None
        if prefix_kv is not None:  # given per kv head, like the layer's own keys
            prefix_key, prefix_value = (jnp.repeat(t, groups, axis=2) for t in prefix_kv)
        use_dropout = not deterministic and arch.attention_dropout > 0
        out = attention(
            q,
            k,
            v,
            key_mask,
            causal=True,
            sliding_window=arch.sliding_windows[self.layer_idx],
            prefix_key=prefix_key,
            prefix_value=prefix_value,
            q_positions=q_positions,
            scale=dim**-0.5,
            dropout_rate=arch.attention_dropout,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
            deterministic=deterministic,
            implementation=self.attention_impl or None,
        )
        out = _dense(arch.hidden_size, arch, self.dtype, "o_proj", arch.o_bias, axes=("heads", "embed"))(
            out.reshape(batch, length, -1))
        return out if cache is None else (out, cache)


class LlamaMLP(nn.Module):
    arch: LlamaArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        arch = self.arch
        if arch.fused_gate_up:
            gate_up = _dense(2 * arch.intermediate_size, arch, self.dtype, "gate_up_proj", arch.mlp_bias,
                             ("embed", "mlp"))(x)
            gate, up = jnp.split(gate_up, 2, axis=-1)
        else:
            gate = _dense(arch.intermediate_size, arch, self.dtype, "gate_proj", arch.mlp_bias, ("embed", "mlp"))(x)
            up = _dense(arch.intermediate_size, arch, self.dtype, "up_proj", arch.mlp_bias, ("embed", "mlp"))(x)
        return _dense(arch.hidden_size, arch, self.dtype, "down_proj", arch.mlp_bias, ("mlp", "embed"))(
            activation_fn(arch.activation)(gate) * up
        )


class LlamaDecoderLayer(nn.Module):
    arch: LlamaArch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, cos, sin, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        h = RMSNorm(arch.rms_norm_eps, arch.gemma_norm, self.dtype, name="input_layernorm")(x)
        attn = LlamaAttention(arch, self.layer_idx, self.dtype, self.attention_impl, name="self_attn")(
            h, cos, sin, key_mask, deterministic, prefix_kv, cache
        )
        if cache is not None:  # with a cache the attention also returns the layer's updated cache
            attn, cache = attn
        drop = nn.Dropout(arch.resid_dropout)
        x = x + drop(attn, deterministic=deterministic)
        h = RMSNorm(arch.rms_norm_eps, arch.gemma_norm, self.dtype, name="post_attention_layernorm")(x)
        x = x + drop(LlamaMLP(arch, self.dtype, name="mlp")(h), deterministic=deterministic)
        return x if cache is None else (x, cache)


class LlamaBackbone(nn.Module):
    """Token embeddings, ``num_layers`` pre-norm decoder layers, final RMSNorm.

    ``remat``/``scan_layers`` (see :mod:`mgpt.models.scan`) change how the layers run, not the result;
    scanned, the layers' params are one stack ``layers`` instead of ``layers_0 .. layers_{L-1}``.
    """

    arch: LlamaArch
    dtype: Any = jnp.float32
    remat: str = "none"
    scan_layers: bool = False
    attention_impl: str = ""

    def setup(self):
        arch = self.arch
        self.embed_tokens = nn.Embed(arch.vocab_size, arch.hidden_size, dtype=self.dtype,
                                     embedding_init=named(nn.initializers.normal(arch.initializer_range), EMBEDDING))
        layer = scan_lib.layer_class(LlamaDecoderLayer, self.remat, 5, self.scan_layers)  # arg 5: deterministic
        if self.scan_layers:
            self.layers = layer(arch, 0, self.dtype, self.attention_impl)  # one layer, params stacked per layer
        else:
            self.layers = [layer(arch, i, self.dtype, self.attention_impl) for i in range(arch.num_layers)]
        self.norm = RMSNorm(arch.rms_norm_eps, arch.gemma_norm, self.dtype)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        position_ids=None,
        prefix_key_values: Optional[Sequence] = None,
        deterministic: bool = True,
        return_hidden_states: bool = False,
        cache: Optional[Sequence] = None,
    ) -> BackboneOutput:
        """Run the decoder.

        ``input_ids`` ``(B, T)`` or ``inputs_embeds`` ``(B, T, E)`` (exactly one; Gemma scales only looked-up
        embeddings, as transformers does); ``attention_mask`` ``(B, T)`` (1 = real); ``position_ids`` default
        to cumulative positions over real tokens (``0..T-1`` for right padding). ``token_type_ids`` is accepted
        for a uniform call signature and ignored. ``prefix_key_values``: optional per-layer ``(key, value)``
        pairs ``(B, P, num_kv_heads, head_dim)``. ``cache``: per-layer
        :class:`~mgpt.models.attention.KVCache` ``(B, S, num_kv_heads, head_dim)`` for decoding; then
        ``position_ids`` ``(B, T)`` are required, ``attention_mask`` is ``(B, S)`` over the cache slots (slot
        order is causal order) and the output carries the updated cache.
        """
        del token_type_ids
        arch = self.arch
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"{arch.family}: pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            x = self.embed_tokens(input_ids)
            if arch.scale_embeddings:  # the normaliser is rounded to the compute dtype, as in transformers
                x = x * jnp.asarray(arch.hidden_size**0.5, self.dtype)
        else:
            x = inputs_embeds.astype(self.dtype)
        batch, length = x.shape[:2]
        if cache is not None and position_ids is None:
            raise ValueError(f"{arch.family}: decoding with a cache needs the position_ids of the new tokens")
        if position_ids is None:
            position_ids = default_positions(attention_mask, batch, length)
        position_ids = jnp.broadcast_to(position_ids, (batch, length))
        if prefix_key_values is not None and len(prefix_key_values) != arch.num_layers:
            raise ValueError(f"{arch.family}: {len(prefix_key_values)} prefix key/value pairs "
                             f"for {arch.num_layers} layers")
        cos, sin = rope_cos_sin(position_ids, rope_inv_freq(arch))
        x = first = constrain_hidden(x)
        x, outputs, new_cache = scan_lib.run_layers(
            self.layers, x, (cos, sin, attention_mask), deterministic, prefix_key_values, cache,
            keep_hidden=return_hidden_states, scanned=self.scan_layers, length=arch.num_layers)
        x = self.norm(x)
        # transformers reports the last layer after the final norm
        all_hidden = (first, *outputs[:-1], x) if return_hidden_states else None
        return BackboneOutput(x, all_hidden, None, new_cache)

    def attend(self, hidden):
        """Logits over the vocabulary with the token embedding as output matrix (the tied LM head)."""
        return self.embed_tokens.attend(hidden)
