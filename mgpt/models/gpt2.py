"""GPT-2 backbone in Flax Linen, laid out like Hugging Face's ``GPT2Model`` so weights map name by name.

Param tree (under the task model's ``"backbone"``)::

    wte/embedding (V, E)        wpe/embedding (P, E)
    h_{i}/ln_1/{scale,bias}     h_{i}/attn/c_attn/{kernel (E, 3E), bias}   h_{i}/attn/c_proj/{kernel, bias}
    h_{i}/ln_2/{scale,bias}     h_{i}/mlp/c_fc/{kernel (E, I), bias}       h_{i}/mlp/c_proj/{kernel, bias}
    ln_f/{scale,bias}

Kernels are ``(in, out)``, the same layout as GPT-2's ``Conv1D`` weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mgpt.models import scan as scan_lib
from mgpt.models.attention import attention, update_kv_cache
from mgpt.models.partitioning import EMBEDDING, constrain_hidden, dense_inits, named, norm_inits

# Activation names used by transformers configs. "gelu" is the exact erf form; the *_new/_fast/_tanh
# variants are the tanh approximation.
ACTIVATIONS: dict[str, Callable] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation_fn(name: str) -> Callable:
    """The activation for a transformers ``hidden_act``/``activation_function`` name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class BackboneOutput(NamedTuple):
    """What every backbone returns.

    ``hidden_states`` follows transformers' ``output_hidden_states``: the embedding output, then each layer's
    output (for GPT-2 the last entry is after ``ln_f``); None unless requested. ``pooled`` is the encoder
    pooler output, or None. ``cache``: the updated per-layer :class:`KVCache` tuple when the decoder was
    called with a cache, else None.
    """

    last_hidden_state: jax.Array
    hidden_states: Optional[tuple]
    pooled: Optional[jax.Array] = None
    cache: Optional[tuple] = None


@dataclasses.dataclass(frozen=True)
class GPT2Arch:
    """The GPT-2 hyperparameters mgpt uses, read from a transformers ``GPT2Config`` (hashable, static)."""

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    activation: str
    layer_norm_epsilon: float
    embd_pdrop: float
    attn_pdrop: float
    resid_pdrop: float
    classifier_dropout: float
    scale_attn_weights: bool
    scale_attn_by_inverse_layer_idx: bool
    initializer_range: float

    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @classmethod
    def from_hf(cls, config, dropout: Optional[float] = None) -> "GPT2Arch":
        """Read a ``GPT2Config``; ``dropout`` overrides every dropout rate when given."""
        if getattr(config, "add_cross_attention", False):
            raise ValueError("GPT-2 with add_cross_attention=True is not supported by mgpt")
        if not getattr(config, "tie_word_embeddings", True):
            raise ValueError("GPT-2 with tie_word_embeddings=False is not supported (mgpt ties the LM head to wte)")
        if config.n_embd % config.n_head:
            raise ValueError(f"GPT-2 config: n_embd={config.n_embd} is not divisible by n_head={config.n_head}")
        activation_fn(config.activation_function)  # fail early on an unknown name
        # Same fallback chain as GPT2ForTokenClassification.
        classifier_dropout = getattr(config, "classifier_dropout", None)
        if classifier_dropout is None:
            classifier_dropout = getattr(config, "hidden_dropout", None)
        if classifier_dropout is None:
            classifier_dropout = 0.1
        rates = dict(
            embd_pdrop=config.embd_pdrop,
            attn_pdrop=config.attn_pdrop,
            resid_pdrop=config.resid_pdrop,
            classifier_dropout=classifier_dropout,
        )
        if dropout is not None:
            rates = {name: float(dropout) for name in rates}
        return cls(
            vocab_size=config.vocab_size,
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_inner=config.n_inner if config.n_inner is not None else 4 * config.n_embd,
            activation=config.activation_function,
            layer_norm_epsilon=config.layer_norm_epsilon,
            scale_attn_weights=bool(config.scale_attn_weights),
            scale_attn_by_inverse_layer_idx=bool(config.scale_attn_by_inverse_layer_idx),
            initializer_range=config.initializer_range,
            **{k: float(v) for k, v in rates.items()},
        )


def _dense(features: int, arch, dtype, name: str, use_bias: bool = True, axes: tuple = (None, None)) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,  # master weights stay float32
        name=name,
        **dense_inits(arch.initializer_range, axes),  # logical axis names for the sharding rules
    )


def _layer_norm(eps: float, dtype, name: Optional[str] = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name, **norm_inits())


class GPT2Attention(nn.Module):
    arch: GPT2Arch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        batch, length, width = x.shape
        head_dim = width // arch.n_head
        qkv = _dense(3 * width, arch, self.dtype, "c_attn", axes=("embed", "heads"))(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(batch, length, arch.n_head, head_dim) for t in (q, k, v))
        scale = head_dim**-0.5 if arch.scale_attn_weights else 1.0
        if arch.scale_attn_by_inverse_layer_idx:
            scale /= float(self.layer_idx + 1)
        use_dropout = not deterministic and arch.attn_pdrop > 0
        prefix_key, prefix_value = prefix_kv if prefix_kv is not None else (None, None)
        q_positions = None
        if cache is not None:  # decoding: write the new keys/values, attend over every filled slot
            cache, filled, q_positions = update_kv_cache(cache, k, v)
            k, v = cache.key, cache.value
            key_mask = filled if key_mask is None else jnp.logical_and(filled, key_mask.astype(bool))
        out = attention(
            q,
            k,
            v,
            key_mask,
            causal=True,
            prefix_key=prefix_key,
            prefix_value=prefix_value,
            q_positions=q_positions,
            scale=scale,
            dropout_rate=arch.attn_pdrop,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
            deterministic=deterministic,
            implementation=self.attention_impl or None,
        )
        out = _dense(width, arch, self.dtype, "c_proj", axes=("heads", "embed"))(out.reshape(batch, length, width))
        out = nn.Dropout(arch.resid_pdrop)(out, deterministic=deterministic)
        return out if cache is None else (out, cache)


class GPT2MLP(nn.Module):
    arch: GPT2Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        arch = self.arch
        h = _dense(arch.n_inner, arch, self.dtype, "c_fc", axes=("embed", "mlp"))(x)
        h = activation_fn(arch.activation)(h)
        h = _dense(arch.n_embd, arch, self.dtype, "c_proj", axes=("mlp", "embed"))(h)
        return nn.Dropout(arch.resid_pdrop)(h, deterministic=deterministic)


class GPT2Block(nn.Module):
    arch: GPT2Arch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        eps = self.arch.layer_norm_epsilon
        h = _layer_norm(eps, self.dtype, "ln_1")(x)
        attn = GPT2Attention(self.arch, self.layer_idx, self.dtype, self.attention_impl, name="attn")(
            h, key_mask, deterministic, prefix_kv, cache)
        if cache is not None:  # with a cache the attention also returns the layer's updated cache
            attn, cache = attn
        x = x + attn
        h = _layer_norm(eps, self.dtype, "ln_2")(x)
        x = x + GPT2MLP(self.arch, self.dtype, name="mlp")(h, deterministic)
        return x if cache is None else (x, cache)


class GPT2Backbone(nn.Module):
    """GPT-2 transformer: token + position embeddings, ``n_layer`` pre-LN blocks, final LayerNorm.

    ``remat``/``scan_layers`` (see :mod:`mgpt.models.scan`) change how the blocks run, not the result;
    scanned, the blocks' params are one stack ``h`` instead of ``h_0 .. h_{L-1}``.
    """

    arch: GPT2Arch
    dtype: Any = jnp.float32
    remat: str = "none"
    scan_layers: bool = False
    attention_impl: str = ""

    def setup(self):
        arch = self.arch
        init = nn.initializers.normal(arch.initializer_range)
        self.wte = nn.Embed(arch.vocab_size, arch.n_embd, embedding_init=named(init, EMBEDDING), dtype=self.dtype)
        self.wpe = nn.Embed(arch.n_positions, arch.n_embd, embedding_init=named(init, (None, "embed")),
                            dtype=self.dtype)
        self.drop = nn.Dropout(arch.embd_pdrop)
        block = scan_lib.layer_class(GPT2Block, self.remat, 3, self.scan_layers)  # arg 3: deterministic
        if self.scan_layers:
            self.h = block(arch, 0, self.dtype, self.attention_impl)  # one block, params stacked per layer
        else:
            self.h = [block(arch, i, self.dtype, self.attention_impl) for i in range(arch.n_layer)]  # h_0, ...
        self.ln_f = _layer_norm(arch.layer_norm_epsilon, self.dtype)

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
        """Run the transformer.

        ``input_ids`` ``(B, T)`` or ``inputs_embeds`` ``(B, T, E)`` (exactly one); ``attention_mask`` ``(B, T)``
        (1 = real); ``position_ids`` default to ``0..T-1`` for every row (matches transformers for
        right-padded batches). ``token_type_ids`` is accepted for a uniform call signature and ignored.
        ``prefix_key_values``: optional per-layer ``(key, value)`` pairs of shape ``(B, P, H, D)``.
        ``cache``: per-layer :class:`~mgpt.models.attention.KVCache` ``(B, S, H, D)`` for decoding; then
        ``position_ids`` ``(B, T)`` are required, ``attention_mask`` is ``(B, S)`` over the cache slots
        (slot order is causal order) and the output carries the updated cache.
        """
        del token_type_ids  # GPT-2 batches carry none
        arch = self.arch
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GPT-2: pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if cache is not None and position_ids is None:
            raise ValueError("GPT-2: decoding with a cache needs the position_ids of the new tokens")
        if position_ids is None:
            if length > arch.n_positions:  # jnp indexing would silently clamp
                raise ValueError(f"GPT-2: sequence length {length} exceeds n_positions={arch.n_positions}")
            position_ids = jnp.arange(length)[None, :]
        if prefix_key_values is not None and len(prefix_key_values) != arch.n_layer:
            raise ValueError(f"GPT-2: {len(prefix_key_values)} prefix key/value pairs for {arch.n_layer} layers")
        x = inputs_embeds.astype(self.dtype) + self.wpe(position_ids)
        x = constrain_hidden(self.drop(x, deterministic=deterministic))
        first = x
        x, outputs, new_cache = scan_lib.run_layers(
            self.h, x, (attention_mask,), deterministic, prefix_key_values, cache,
            keep_hidden=return_hidden_states, scanned=self.scan_layers, length=arch.n_layer)
        x = self.ln_f(x)
        # transformers reports the last layer after ln_f
        all_hidden = (first, *outputs[:-1], x) if return_hidden_states else None
        return BackboneOutput(x, all_hidden, None, new_cache)

    def attend(self, hidden):
        """Logits over the vocabulary with the token embedding as output matrix (the tied LM head)."""
        return self.wte.attend(hidden)
