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

from mgpt.models.attention import attention

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
    pooler output, or None.
    """

    last_hidden_state: jax.Array
    hidden_states: Optional[tuple]
    pooled: Optional[jax.Array] = None


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


def _dense(features: int, arch, dtype, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,  # master weights stay float32
        kernel_init=nn.initializers.normal(arch.initializer_range),
        name=name,
    )


class GPT2Attention(nn.Module):
    arch: GPT2Arch
    layer_idx: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None):
        arch = self.arch
        batch, length, width = x.shape
        head_dim = width // arch.n_head
        qkv = _dense(3 * width, arch, self.dtype, "c_attn")(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(batch, length, arch.n_head, head_dim) for t in (q, k, v))
        scale = head_dim**-0.5 if arch.scale_attn_weights else 1.0
        if arch.scale_attn_by_inverse_layer_idx:
            scale /= float(self.layer_idx + 1)
        use_dropout = not deterministic and arch.attn_pdrop > 0
        prefix_key, prefix_value = prefix_kv if prefix_kv is not None else (None, None)
        out = attention(
            q,
            k,
            v,
            key_mask,
            causal=True,
            prefix_key=prefix_key,
            prefix_value=prefix_value,
            scale=scale,
            dropout_rate=arch.attn_pdrop,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
            deterministic=deterministic,
        )
        out = _dense(width, arch, self.dtype, "c_proj")(out.reshape(batch, length, width))
        return nn.Dropout(arch.resid_pdrop)(out, deterministic=deterministic)


class GPT2MLP(nn.Module):
    arch: GPT2Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        arch = self.arch
        h = _dense(arch.n_inner, arch, self.dtype, "c_fc")(x)
        h = activation_fn(arch.activation)(h)
        h = _dense(arch.n_embd, arch, self.dtype, "c_proj")(h)
        return nn.Dropout(arch.resid_pdrop)(h, deterministic=deterministic)


class GPT2Block(nn.Module):
    arch: GPT2Arch
    layer_idx: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None):
        eps = self.arch.layer_norm_epsilon
        h = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="ln_1")(x)
        x = x + GPT2Attention(self.arch, self.layer_idx, self.dtype, name="attn")(h, key_mask, deterministic, prefix_kv)
        h = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="ln_2")(x)
        return x + GPT2MLP(self.arch, self.dtype, name="mlp")(h, deterministic)


class GPT2Backbone(nn.Module):
    """GPT-2 transformer: token + position embeddings, ``n_layer`` pre-LN blocks, final LayerNorm."""

    arch: GPT2Arch
    dtype: Any = jnp.float32

    def setup(self):
        arch = self.arch
        init = nn.initializers.normal(arch.initializer_range)
        self.wte = nn.Embed(arch.vocab_size, arch.n_embd, embedding_init=init, dtype=self.dtype)
        self.wpe = nn.Embed(arch.n_positions, arch.n_embd, embedding_init=init, dtype=self.dtype)
        self.drop = nn.Dropout(arch.embd_pdrop)
        self.h = [GPT2Block(arch, i, self.dtype) for i in range(arch.n_layer)]  # named h_0, h_1, ...
        self.ln_f = nn.LayerNorm(epsilon=arch.layer_norm_epsilon, dtype=self.dtype)

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
    ) -> BackboneOutput:
        """Run the transformer.

        ``input_ids`` ``(B, T)`` or ``inputs_embeds`` ``(B, T, E)`` (exactly one); ``attention_mask`` ``(B, T)``
        (1 = real); ``position_ids`` default to ``0..T-1`` for every row (matches transformers for
        right-padded batches). ``token_type_ids`` is accepted for a uniform call signature and ignored.
        ``prefix_key_values``: optional per-layer ``(key, value)`` pairs of shape ``(B, P, H, D)``.
        """
        del token_type_ids  # GPT-2 batches carry none
        arch = self.arch
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GPT-2: pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            if length > arch.n_positions:  # jnp indexing would silently clamp
                raise ValueError(f"GPT-2: sequence length {length} exceeds n_positions={arch.n_positions}")
            position_ids = jnp.arange(length)[None, :]
        if prefix_key_values is not None and len(prefix_key_values) != arch.n_layer:
            raise ValueError(f"GPT-2: {len(prefix_key_values)} prefix key/value pairs for {arch.n_layer} layers")
        x = inputs_embeds.astype(self.dtype) + self.wpe(position_ids)
        x = self.drop(x, deterministic=deterministic)
        all_hidden = [x] if return_hidden_states else None
        for i, block in enumerate(self.h):
            prefix = prefix_key_values[i] if prefix_key_values is not None else None
            x = block(x, attention_mask, deterministic, prefix)
            if return_hidden_states and i < arch.n_layer - 1:
                all_hidden.append(x)
        x = self.ln_f(x)
        if return_hidden_states:
            all_hidden.append(x)  # transformers reports the last layer after ln_f
        return BackboneOutput(x, tuple(all_hidden) if return_hidden_states else None, None)

    def attend(self, hidden):
        """Logits over the vocabulary with the token embedding as output matrix (the tied LM head)."""
        return self.wte.attend(hidden)
