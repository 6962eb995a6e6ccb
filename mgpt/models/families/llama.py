"""Llama: the decoder Mistral, Qwen2, Gemma, Qwen3 and Phi-3 reuse (their modules declare only what differs).

Pre-norm blocks with RMSNorm (float32 math), rotary position embeddings (the ``rotate_half`` convention of
transformers), grouped-query attention, a gated MLP (``down(act(gate) * up)``) and a final RMSNorm.
:class:`LlamaArch` records what the reusing families change: biases, Gemma's scaled embeddings and
``(1 + w)`` norm, sliding windows, tied or untied LM head, RoPE scaling ("linear", "llama3"), Qwen3's
per-head q/k RMSNorm, Phi-3's fused ``qkv_proj``/``gate_up_proj``, partial RoPE and residual dropout.

Param tree (under the task model's ``"backbone"``), kernels ``(in, out)``::

    embed_tokens/embedding (V, E)
    layers_{i}/self_attn/{q_proj,k_proj,v_proj,o_proj}/{kernel[,bias]}
    layers_{i}/mlp/{gate_proj,up_proj,down_proj}/{kernel[,bias]}
    layers_{i}/{input_layernorm,post_attention_layernorm}/scale      norm/scale

A family built on this decoder calls :func:`decoder_family` with its own ``read_arch`` (usually
``dataclasses.replace`` of :func:`read_arch`'s result) and registers the result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models import scan as scan_lib
from mgpt.models.attention import attention
from mgpt.models.family import Arch, Family, register
from mgpt.models.heads import decoder_head
from mgpt.models.layers import (
    BackboneOutput,
    GatedMLP,
    RMSNorm,
    activation_fn,
    apply_rope,
    cached_attention_inputs,
    classifier_dropout,
    default_positions,
    dense,
    dropout_rates,
    rope_cos_sin,
    rope_inv_freq,
    rope_parameters,
)
from mgpt.models.mappings import Entry, add_rows
from mgpt.models.partitioning import EMBEDDING, constrain_hidden, named


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaArch(Arch):
    """:class:`Arch` plus what the Llama-family decoders differ in."""

    family: str  # the model_type, for messages
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    gemma_norm: bool = False  # RMSNorm output * (1 + weight), weight initialised at 0
    scale_embeddings: bool = False  # embeddings * sqrt(hidden_size)
    rope_theta: float = 10000.0
    rope_scaling: tuple = ()  # sorted (key, value) pairs of the RoPE parameters besides rope_theta
    sliding_windows: tuple = ()  # per layer: window length or None
    token_classification_bias: bool = True
    qk_norm: bool = False  # RMSNorm over head_dim on every query and key head, before RoPE (Qwen3)
    fused_qkv: bool = False  # one qkv_proj: the queries, then the keys, then the values (Phi-3)
    fused_gate_up: bool = False  # one gate_up_proj: the gate, then the up projection (Phi-3)

    @property
    def rope_type(self) -> str:
        return dict(self.rope_scaling).get("rope_type", "default")


def read_arch(config, dropout: Optional[float] = None, partial_rotary: bool = False) -> LlamaArch:
    """Read a Llama-style transformers config (Llama's own bias flags, no sliding window); ``dropout``
    overrides every rate. The reusing families adjust the result with ``dataclasses.replace``;
    ``partial_rotary``: the family's RoPE honours ``partial_rotary_factor`` (see ``rope_parameters``)."""
    family = config.model_type
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        raise ValueError(f"{family} config: num_attention_heads={heads} is not a multiple of "
                         f"num_key_value_heads={kv_heads}")
    if getattr(config, "use_bidirectional_attention", False):
        raise ValueError(f"{family} config: use_bidirectional_attention=True is not supported (mgpt is causal)")
    activation_fn(config.hidden_act)  # fail early on an unknown name
    theta, scaling = rope_parameters(config, partial_rotary)
    rates = dropout_rates({"attention_dropout": getattr(config, "attention_dropout", 0.0) or 0.0,
                           "classifier_dropout": classifier_dropout(config)}, dropout)
    attention_bias = bool(getattr(config, "attention_bias", False))
    return LlamaArch(
        family=family,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate_size=config.intermediate_size,
        activation=config.hidden_act,
        norm_eps=float(config.rms_norm_eps),
        max_positions=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_windows=(None,) * config.num_hidden_layers,
        token_classification_bias=bool(getattr(config, "token_classification_bias", True)),
        **rates,
    )


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
            layer = dense(count * dim, arch.initializer_range, self.dtype, name, bias, ("embed", "heads"))
            return layer(x).reshape(batch, length, count, dim)

        if arch.fused_qkv:
            q, k, v = jnp.split(project("qkv_proj", heads + 2 * kv_heads, arch.qkv_bias), [heads, heads + kv_heads], 2)
        else:
            q, k, v = (project(name, count, arch.qkv_bias)
                       for name, count in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads)))
        if arch.qk_norm:
            q = RMSNorm(arch.norm_eps, dtype=self.dtype, name="q_norm")(q)
            k = RMSNorm(arch.norm_eps, dtype=self.dtype, name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q_positions = None
        if cache is not None:  # decoding: the cache keeps kv heads (rotated keys)
            cache, k, v, key_mask, q_positions = cached_attention_inputs(cache, k, v, key_mask)
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
        o_proj = dense(arch.hidden_size, arch.initializer_range, self.dtype, "o_proj", arch.o_bias, ("heads", "embed"))
        out = o_proj(out.reshape(batch, length, -1))
        return out if cache is None else (out, cache)


class LlamaDecoderLayer(nn.Module):
    arch: LlamaArch
    layer_idx: int
    dtype: Any = jnp.float32
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, cos, sin, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        h = RMSNorm(arch.norm_eps, arch.gemma_norm, self.dtype, name="input_layernorm")(x)
        attn = LlamaAttention(arch, self.layer_idx, self.dtype, self.attention_impl, name="self_attn")(
            h, cos, sin, key_mask, deterministic, prefix_kv, cache
        )
        if cache is not None:  # with a cache the attention also returns the layer's updated cache
            attn, cache = attn
        drop = nn.Dropout(arch.hidden_dropout)  # on each branch before its residual add (Phi-3's resid_pdrop)
        x = x + drop(attn, deterministic=deterministic)
        h = RMSNorm(arch.norm_eps, arch.gemma_norm, self.dtype, name="post_attention_layernorm")(x)
        mlp = GatedMLP(arch.hidden_size, arch.intermediate_size, arch.activation, arch.initializer_range,
                       arch.mlp_bias, self.dtype, arch.fused_gate_up, name="mlp")
        x = x + drop(mlp(h), deterministic=deterministic)
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
        self.norm = RMSNorm(arch.norm_eps, arch.gemma_norm, self.dtype)

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
        cos, sin = rope_cos_sin(position_ids, rope_inv_freq(arch.head_dim, arch.rope_theta, arch.rope_scaling))
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


def tensor_table(spec) -> dict[str, Entry]:
    """Llama, Mistral, Qwen2 and Gemma share one layout; biases follow the architecture flags (Qwen3 and
    Phi-3 edit this table in their modules)."""
    arch = spec.arch
    t: dict[str, Entry] = {}
    b = ("backbone",)
    add_rows(t, "embed_tokens", b + ("embed_tokens",), "embedding")
    for i in range(arch.num_layers):
        p = b + (f"layers_{i}",)
        for name in ("q_proj", "k_proj", "v_proj"):
            add_rows(t, f"layers.{i}.self_attn.{name}", p + ("self_attn", name), "linear", bias=arch.qkv_bias)
        add_rows(t, f"layers.{i}.self_attn.o_proj", p + ("self_attn", "o_proj"), "linear", bias=arch.o_bias)
        for name in ("gate_proj", "up_proj", "down_proj"):
            add_rows(t, f"layers.{i}.mlp.{name}", p + ("mlp", name), "linear", bias=arch.mlp_bias)
        for name in ("input_layernorm", "post_attention_layernorm"):
            add_rows(t, f"layers.{i}.{name}", p + (name,), "layernorm", bias=False)
    add_rows(t, "norm", b + ("norm",), "layernorm", bias=False)
    if spec.task == "causal_lm":
        if not arch.tie_word_embeddings:
            add_rows(t, "lm_head", ("head", "lm_head"), "linear", role="head", bias=False)
    elif spec.task == "token_classification":  # GenericForTokenClassification: `score` with a bias
        add_rows(t, "score", ("head", "score"), "linear", role="head", bias=arch.token_classification_bias)
    else:  # GenericForSequenceClassification: `score` without a bias, on the last real token
        add_rows(t, "score", ("head", "score"), "linear", role="head", bias=False)
    return t


OTHER_HEAD = "head of another task"
IGNORED = (
    (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", "RoPE buffer (recomputed)"),
    (r"lm_head\.weight", "LM head not used (tied to embed_tokens, or another task)"),
    (r"score\.(weight|bias)", OTHER_HEAD),
    (r"qa_outputs\.(weight|bias)", OTHER_HEAD),
)
PEFT_TARGETS = {
    "lora": r"self_attn/(q_proj|k_proj|v_proj)$",  # the attention query/key/value projections
    "ia3": r"(self_attn/(k_proj|v_proj)|mlp/down_proj)$",  # keys, values and the FFN output (Liu et al. 2022)
    "ia3_feedforward": r"mlp/down_proj$",
    "adapter_attention": r"self_attn/o_proj$",  # before the residual add
    "adapter_ffn": r"mlp/down_proj$",
}
TASK_SUFFIX = {"sequence_classification": "ForSequenceClassification", "regression": "ForSequenceClassification",
               "token_classification": "ForTokenClassification", "causal_lm": "ForCausalLM"}


def build_backbone(spec) -> LlamaBackbone:
    return LlamaBackbone(spec.arch, spec.compute_dtype, spec.remat, spec.scan_layers, spec.attention_impl)


def build_head(spec) -> Optional[nn.Module]:
    return decoder_head(spec, "score", spec.arch.token_classification_bias)


def mixed_windows(arch: LlamaArch) -> Optional[str]:
    """Why ``arch`` cannot scan: its layers have different sliding windows (one program cannot hold them)."""
    if len(set(arch.sliding_windows)) > 1:
        return f"{arch.family} layers have different sliding windows {arch.sliding_windows}"
    return None


def decoder_family(name: str, read: Callable, class_prefix: str, bench_sizes: Optional[dict] = None,
                   **changes) -> Family:
    """The :class:`Family` of a decoder that runs on these layers: ``read`` is its ``read_arch``,
    ``class_prefix`` the transformers class prefix ("Mistral"); ``changes`` replace other Family fields."""
    family = Family(
        name=name,
        is_decoder=True,
        read_arch=read,
        tensor_table=tensor_table,
        base_prefix="model.",
        build_backbone=build_backbone,
        build_head=build_head,
        architectures={task: class_prefix + suffix for task, suffix in TASK_SUFFIX.items()},
        peft_targets=PEFT_TARGETS,
        embedding_path=("backbone", "embed_tokens", "embedding"),
        ignored=IGNORED,
        scan_stack="layers",
        scan_blocker=mixed_windows,
        bench_sizes=bench_sizes or {},
    )
    return dataclasses.replace(family, **changes)


BENCH_SIZES = {
    "llama-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                       intermediate_size=2048, vocab_size=32000, max_position_embeddings=4096),
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256, max_position_embeddings=8192,
                     tie_word_embeddings=True),
}

FAMILY = register(decoder_family("llama", read_arch, "Llama", BENCH_SIZES))
