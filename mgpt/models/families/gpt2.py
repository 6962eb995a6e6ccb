"""GPT-2 in Flax Linen, laid out like Hugging Face's ``GPT2Model`` so weights map name by name.

Param tree (under the task model's ``"backbone"``)::

    wte/embedding (V, E)        wpe/embedding (P, E)
    h_{i}/ln_1/{scale,bias}     h_{i}/attn/c_attn/{kernel (E, 3E), bias}   h_{i}/attn/c_proj/{kernel, bias}
    h_{i}/ln_2/{scale,bias}     h_{i}/mlp/c_fc/{kernel (E, I), bias}       h_{i}/mlp/c_proj/{kernel, bias}
    ln_f/{scale,bias}

Kernels are ``(in, out)``, the same layout as GPT-2's ``Conv1D`` weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models import scan as scan_lib
from mgpt.models.attention import attention
from mgpt.models.family import Arch, Family, register
from mgpt.models.heads import decoder_head
from mgpt.models.layers import (
    MLP,
    BackboneOutput,
    activation_fn,
    cached_attention_inputs,
    classifier_dropout,
    dense,
    dropout_rates,
    layer_norm,
)
from mgpt.models.mappings import Entry, add_rows
from mgpt.models.partitioning import EMBEDDING, constrain_hidden, named


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPT2Arch(Arch):
    """:class:`Arch` plus GPT-2's own settings (``hidden_dropout`` is ``resid_pdrop``)."""

    embd_dropout: float = 0.0
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False

    # GPT-2's own names for the shared fields
    @property
    def n_layer(self) -> int:
        return self.num_layers

    @property
    def n_embd(self) -> int:
        return self.hidden_size

    @property
    def n_head(self) -> int:
        return self.num_heads


def read_arch(config, dropout: Optional[float] = None) -> GPT2Arch:
    """Read a ``GPT2Config``; ``dropout`` overrides every dropout rate when given."""
    if getattr(config, "add_cross_attention", False):
        raise ValueError("GPT-2 with add_cross_attention=True is not supported by mgpt")
    if not getattr(config, "tie_word_embeddings", True):
        raise ValueError("GPT-2 with tie_word_embeddings=False is not supported (mgpt ties the LM head to wte)")
    if config.n_embd % config.n_head:
        raise ValueError(f"GPT-2 config: n_embd={config.n_embd} is not divisible by n_head={config.n_head}")
    activation_fn(config.activation_function)  # fail early on an unknown name
    rates = dropout_rates(dict(embd_dropout=config.embd_pdrop, attention_dropout=config.attn_pdrop,
                               hidden_dropout=config.resid_pdrop, classifier_dropout=classifier_dropout(config)),
                          dropout)
    return GPT2Arch(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        num_layers=config.n_layer,
        num_heads=config.n_head,
        num_kv_heads=config.n_head,
        head_dim=config.n_embd // config.n_head,
        intermediate_size=config.n_inner if config.n_inner is not None else 4 * config.n_embd,
        activation=config.activation_function,
        norm_eps=config.layer_norm_epsilon,
        max_positions=config.n_positions,
        initializer_range=config.initializer_range,
        tie_word_embeddings=True,
        scale_attn_weights=bool(config.scale_attn_weights),
        scale_attn_by_inverse_layer_idx=bool(config.scale_attn_by_inverse_layer_idx),
        **rates,
    )


class GPT2Attention(nn.Module):
    arch: GPT2Arch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        batch, length, width = x.shape
        std = arch.initializer_range
        qkv = dense(3 * width, std, self.dtype, "c_attn", axes=("embed", "heads"))(x)
        q, k, v = (t.reshape(batch, length, arch.num_heads, arch.head_dim) for t in jnp.split(qkv, 3, axis=-1))
        scale = arch.head_dim**-0.5 if arch.scale_attn_weights else 1.0
        if arch.scale_attn_by_inverse_layer_idx:
            scale /= float(self.layer_idx + 1)
        use_dropout = not deterministic and arch.attention_dropout > 0
        prefix_key, prefix_value = prefix_kv if prefix_kv is not None else (None, None)
        q_positions = None
        if cache is not None:  # decoding: write the new keys/values, attend over every filled slot
            cache, k, v, key_mask, q_positions = cached_attention_inputs(cache, k, v, key_mask)
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
            dropout_rate=arch.attention_dropout,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
            deterministic=deterministic,
            implementation=self.attention_impl or None,
        )
        out = dense(width, std, self.dtype, "c_proj", axes=("heads", "embed"))(out.reshape(batch, length, width))
        out = nn.Dropout(arch.hidden_dropout)(out, deterministic=deterministic)
        return out if cache is None else (out, cache)


class GPT2Block(nn.Module):
    arch: GPT2Arch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        h = layer_norm(arch.norm_eps, self.dtype, "ln_1")(x)
        attn = GPT2Attention(arch, self.layer_idx, self.dtype, self.attention_impl, name="attn")(
            h, key_mask, deterministic, prefix_kv, cache)
        if cache is not None:  # with a cache the attention also returns the layer's updated cache
            attn, cache = attn
        x = x + attn
        h = layer_norm(arch.norm_eps, self.dtype, "ln_2")(x)
        mlp = MLP(arch.hidden_size, arch.intermediate_size, arch.activation, arch.initializer_range,
                  arch.hidden_dropout, self.dtype, name="mlp")
        x = x + mlp(h, deterministic)
        return x if cache is None else (x, cache)


class GPT2Backbone(nn.Module):
    """GPT-2 transformer: token + position embeddings, ``num_layers`` pre-LN blocks, final LayerNorm.

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
        self.wte = nn.Embed(arch.vocab_size, arch.hidden_size, embedding_init=named(init, EMBEDDING),
                            dtype=self.dtype)
        self.wpe = nn.Embed(arch.max_positions, arch.hidden_size, embedding_init=named(init, (None, "embed")),
                            dtype=self.dtype)
        self.drop = nn.Dropout(arch.embd_dropout)
        block = scan_lib.layer_class(GPT2Block, self.remat, 3, self.scan_layers)  # arg 3: deterministic
        if self.scan_layers:
            self.h = block(arch, 0, self.dtype, self.attention_impl)  # one block, params stacked per layer
        else:
            self.h = [block(arch, i, self.dtype, self.attention_impl) for i in range(arch.num_layers)]  # h_0, ...
        self.ln_f = layer_norm(arch.norm_eps, self.dtype)

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
        length = inputs_embeds.shape[1]
        if cache is not None and position_ids is None:
            raise ValueError("GPT-2: decoding with a cache needs the position_ids of the new tokens")
        if position_ids is None:
            if length > arch.max_positions:  # jnp indexing would silently clamp
                raise ValueError(f"GPT-2: sequence length {length} exceeds n_positions={arch.max_positions}")
            position_ids = jnp.arange(length)[None, :]
        if prefix_key_values is not None and len(prefix_key_values) != arch.num_layers:
            raise ValueError(f"GPT-2: {len(prefix_key_values)} prefix key/value pairs for {arch.num_layers} layers")
        x = inputs_embeds.astype(self.dtype) + self.wpe(position_ids)
        x = constrain_hidden(self.drop(x, deterministic=deterministic))
        first = x
        x, outputs, new_cache = scan_lib.run_layers(
            self.h, x, (attention_mask,), deterministic, prefix_key_values, cache,
            keep_hidden=return_hidden_states, scanned=self.scan_layers, length=arch.num_layers)
        x = self.ln_f(x)
        # transformers reports the last layer after ln_f
        all_hidden = (first, *outputs[:-1], x) if return_hidden_states else None
        return BackboneOutput(x, all_hidden, None, new_cache)

    def attend(self, hidden):
        """Logits over the vocabulary with the token embedding as output matrix (the tied LM head)."""
        return self.wte.attend(hidden)


def tensor_table(spec) -> dict[str, Entry]:
    t: dict[str, Entry] = {}
    b = ("backbone",)
    add_rows(t, "wte", b + ("wte",), "embedding")
    add_rows(t, "wpe", b + ("wpe",), "embedding")
    for i in range(spec.arch.num_layers):
        h = b + (f"h_{i}",)
        add_rows(t, f"h.{i}.ln_1", h + ("ln_1",), "layernorm")
        add_rows(t, f"h.{i}.attn.c_attn", h + ("attn", "c_attn"), "conv1d")
        add_rows(t, f"h.{i}.attn.c_proj", h + ("attn", "c_proj"), "conv1d")
        add_rows(t, f"h.{i}.ln_2", h + ("ln_2",), "layernorm")
        add_rows(t, f"h.{i}.mlp.c_fc", h + ("mlp", "c_fc"), "conv1d")
        add_rows(t, f"h.{i}.mlp.c_proj", h + ("mlp", "c_proj"), "conv1d")
    add_rows(t, "ln_f", b + ("ln_f",), "layernorm")
    if spec.task in ("sequence_classification", "regression"):
        add_rows(t, "score", ("head", "score"), "linear", role="head", bias=False)
    elif spec.task == "token_classification":
        add_rows(t, "classifier", ("head", "classifier"), "linear", role="head")
    return t


OTHER_HEAD = "head of another task"
IGNORED = (
    (r"h\.\d+\.attn\.(bias|masked_bias)", "causal-mask buffer"),
    (r"h\.\d+\.crossattention\.(bias|masked_bias)", "causal-mask buffer"),
    (r"lm_head\.weight", "LM head tied to wte"),
    (r"score\.weight", OTHER_HEAD),
    (r"classifier\.(weight|bias)", OTHER_HEAD),
    (r"multiple_choice_head\..*", OTHER_HEAD),
    (r"qa_outputs\.(weight|bias)", OTHER_HEAD),
)


def build_backbone(spec) -> GPT2Backbone:
    return GPT2Backbone(spec.arch, spec.compute_dtype, spec.remat, spec.scan_layers, spec.attention_impl)


def build_head(spec) -> Optional[nn.Module]:
    return decoder_head(spec)


def per_layer_scale(arch: GPT2Arch) -> Optional[str]:
    """Why ``arch`` cannot scan: each layer's attention is scaled by its own index."""
    if arch.scale_attn_by_inverse_layer_idx:
        return "GPT-2 with scale_attn_by_inverse_layer_idx scales each layer differently"
    return None


FAMILY = register(Family(
    name="gpt2",
    is_decoder=True,
    read_arch=read_arch,
    tensor_table=tensor_table,
    base_prefix="transformer.",
    build_backbone=build_backbone,
    build_head=build_head,
    architectures={"causal_lm": "GPT2LMHeadModel", "token_classification": "GPT2ForTokenClassification",
                   "sequence_classification": "GPT2ForSequenceClassification",
                   "regression": "GPT2ForSequenceClassification"},
    # GPT-2 fuses q/k/v in c_attn, so LoRA adapts it whole and IA3 scales all three.
    peft_targets={"lora": r"attn/c_attn$", "ia3": r"(attn/c_attn|mlp/c_proj)$", "ia3_feedforward": r"mlp/c_proj$",
                  "adapter_attention": r"attn/c_proj$", "adapter_ffn": r"mlp/c_proj$"},
    embedding_path=("backbone", "wte", "embedding"),
    ignored=IGNORED,
    scan_stack="h",
    scan_blocker=per_layer_scale,
    bench_sizes={
        "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
        "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024),
    },
))
