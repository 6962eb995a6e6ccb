"""Llama: the decoder Mistral, Qwen2 and Gemma reuse (their modules declare only what differs).

Pre-norm blocks with RMSNorm (float32 math), rotary position embeddings (the ``rotate_half`` convention of
transformers), grouped-query attention, a gated MLP (``down(act(gate) * up)``) and a final RMSNorm.
:class:`LlamaArch` records what the reusing families change: biases, Gemma's scaled embeddings and
``(1 + w)`` norm, sliding windows, tied or untied LM head, RoPE scaling ("linear", "llama3").

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
from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models.family import Arch, Family, config_fields, register
from mgpt.models.heads import decoder_head
from mgpt.models.layers import (
    BackboneInputs,
    BackboneOutput,
    DecoderBackbone,
    GatedMLP,
    LayerModule,
    RMSNorm,
    activation_fn,
    apply_rope,
    attention_block,
    check_inputs,
    classifier_dropout,
    default_positions,
    dense,
    dropout_rates,
    perturb_token_embeddings,
    pre_norm_residual,
    rope_cos_sin,
    rope_inv_freq,
    rope_parameters,
    run_decoder_layers,
    segment_positions,
)
from mgpt.models.gguf_format import GgufLayout
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
    names = config_fields(config, vocab_size="vocab_size", hidden_size="hidden_size", num_layers="num_hidden_layers",
                          intermediate_size="intermediate_size", activation="hidden_act",
                          max_positions="max_position_embeddings", initializer_range="initializer_range")
    return LlamaArch(
        family=family,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        norm_eps=float(config.rms_norm_eps),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_windows=(None,) * config.num_hidden_layers,
        token_classification_bias=bool(getattr(config, "token_classification_bias", True)),
        **names,
        **rates,
    )


class LlamaAttention(LayerModule):
    """Grouped-query self-attention with RoPE. A family whose projections differ (fused q/k/v, q/k norms)
    subclasses it and overrides :meth:`project_qkv`."""

    @nn.nowrap
    def project_qkv(self, x):
        """``(q, k, v)`` ``(B, T, heads or kv heads, head_dim)`` before RoPE (runs inside ``__call__``)."""
        arch = self.arch
        batch, length, _ = x.shape

        def project(name, count):
            layer = dense(count * arch.head_dim, arch.initializer_range, self.dtype, name, arch.qkv_bias,
                          ("embed", "heads"))
            return layer(x).reshape(batch, length, count, arch.head_dim)

        heads, kv_heads = arch.num_heads, arch.num_kv_heads
        return project("q_proj", heads), project("k_proj", kv_heads), project("v_proj", kv_heads)

    @nn.compact
    def __call__(self, x, cos, sin, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        batch, length, _ = x.shape
        q, k, v = self.project_qkv(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # decoding: the cache keeps kv heads (rotated keys); prefix keys/values are given per kv head
        out, cache = attention_block(self, q, k, v, key_mask, deterministic=deterministic,
                                     dropout_rate=arch.attention_dropout, prefix_kv=prefix_kv, cache=cache,
                                     scale=arch.head_dim**-0.5, sliding_window=arch.sliding_windows[self.layer_idx],
                                     implementation=self.attention_impl)
        o_proj = dense(arch.hidden_size, arch.initializer_range, self.dtype, "o_proj", arch.o_bias, ("heads", "embed"))
        return o_proj(out.reshape(batch, length, -1)), cache


class LlamaDecoderLayer(LayerModule):
    """Pre-norm layer: RMSNorm -> attention -> residual, RMSNorm -> gated MLP -> residual. A family with its
    own attention or MLP subclasses it, setting ``attention_cls`` or overriding :meth:`feed_forward`."""

    attention_cls = LlamaAttention  # a class attribute, not a module field

    @nn.nowrap
    def feed_forward(self):
        """The MLP module, named ``mlp`` (runs inside ``__call__``)."""
        arch = self.arch
        return GatedMLP(arch.hidden_size, arch.intermediate_size, arch.activation, arch.initializer_range,
                        arch.mlp_bias, self.dtype, name="mlp")

    @nn.compact
    def __call__(self, x, cos, sin, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        attn = self.attention_cls(arch, self.layer_idx, self.dtype, self.attention_impl, name="self_attn")
        norms = tuple(RMSNorm(arch.norm_eps, arch.gemma_norm, self.dtype, name=name)
                      for name in ("input_layernorm", "post_attention_layernorm"))
        return pre_norm_residual(x, lambda h: attn(h, cos, sin, key_mask, deterministic, prefix_kv, cache),
                                 self.feed_forward(), norms, cache)


class LlamaBackbone(DecoderBackbone):
    """Token embeddings, ``num_layers`` pre-norm decoder ``layers``, final RMSNorm (``layer_cls`` may be a
    subclass of :class:`LlamaDecoderLayer` in a family that subclasses this backbone)."""

    layer_cls = LlamaDecoderLayer  # a class attribute, not a module field

    def setup(self):
        arch = self.arch
        self.embed_tokens = nn.Embed(arch.vocab_size, arch.hidden_size, dtype=self.dtype,
                                     embedding_init=named(nn.initializers.normal(arch.initializer_range), EMBEDDING))
        self.layers = self.layer_stack(self.layer_cls, 5)  # layers_0, ... (arg 5: deterministic)
        self.norm = RMSNorm(arch.norm_eps, arch.gemma_norm, self.dtype)

    def __call__(self, inputs: BackboneInputs) -> BackboneOutput:
        """Run the decoder on :class:`~mgpt.models.layers.BackboneInputs`.

        Gemma scales only looked-up embeddings, as transformers does. ``position_ids`` default to cumulative
        positions over real tokens (``0..T-1`` for right padding); token types are ignored. Prefix
        keys/values and caches are per key/value head: ``(B, P or S, num_kv_heads, head_dim)``.
        """
        arch = self.arch
        check_inputs(inputs, arch.family, arch.num_layers)
        if inputs.inputs_embeds is None:
            x = self.embed_tokens(inputs.input_ids)
            if arch.scale_embeddings:  # the normaliser is rounded to the compute dtype, as in transformers
                x = x * jnp.asarray(arch.hidden_size**0.5, self.dtype)
        else:
            x = inputs.inputs_embeds.astype(self.dtype)
        x = perturb_token_embeddings(x, inputs)
        batch, length = x.shape[:2]
        position_ids = inputs.position_ids
        if position_ids is None and inputs.num_segments:
            position_ids = segment_positions(inputs.attention_mask)
        elif position_ids is None:
            position_ids = default_positions(inputs.attention_mask, batch, length)
        position_ids = jnp.broadcast_to(position_ids, (batch, length))
        cos, sin = rope_cos_sin(position_ids, rope_inv_freq(arch.head_dim, arch.rope_theta, arch.rope_scaling))
        return run_decoder_layers(self.layers, constrain_hidden(x), (cos, sin, inputs.attention_mask), inputs,
                                  self.norm, self.scan_layers, arch.num_layers)

    def attend(self, hidden):
        """Logits over the vocabulary with the token embedding as output matrix (the tied LM head)."""
        return self.embed_tokens.attend(hidden)


def tensor_table(spec) -> dict[str, Entry]:
    """Llama, Mistral, Qwen2 and Gemma share one layout; biases follow the architecture flags."""
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


# llama.cpp's own layout: q/k rows interleaved for its RoPE; biases only when the checkpoint has them.
GGUF_LAYOUT = GgufLayout("llama", permute_qk=True,
                         bias_flags=(("blk.0.attn_q.bias", "attention_bias"), ("blk.0.ffn_up.bias", "mlp_bias")))


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
        gguf=GGUF_LAYOUT,
    )
    return dataclasses.replace(family, **changes)


BENCH_SIZES = {
    "llama-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                       intermediate_size=2048, vocab_size=32000, max_position_embeddings=4096),
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256, max_position_embeddings=8192,
                     tie_word_embeddings=True),
    # SmolLM2-135M-Instruct's architecture (the packaged GGUF file's), for a fine-tuning step at random weights
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=True),
}

FAMILY = register(decoder_family("llama", read_arch, "Llama", BENCH_SIZES))
