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
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models.family import Arch, Family, config_fields, register
from mgpt.models.gguf_format import GPT2_KEYS, GgufLayout
from mgpt.models.heads import decoder_head
from mgpt.models.layers import (
    MLP,
    BackboneInputs,
    BackboneOutput,
    DecoderBackbone,
    LayerModule,
    activation_fn,
    attention_block,
    check_inputs,
    classifier_dropout,
    dense,
    dropout_rates,
    layer_norm,
    perturb_token_embeddings,
    pre_norm_residual,
    run_decoder_layers,
    segment_positions,
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

    @property
    def n_positions(self) -> int:  # learned positions: a hard length limit (mgpt.generate reads it)
        return self.max_positions


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
    names = config_fields(config, vocab_size="vocab_size", hidden_size="n_embd", num_layers="n_layer",
                          num_heads="n_head", num_kv_heads="n_head", activation="activation_function",
                          norm_eps="layer_norm_epsilon", max_positions="n_positions",
                          initializer_range="initializer_range")
    return GPT2Arch(
        head_dim=config.n_embd // config.n_head,
        intermediate_size=config.n_inner if config.n_inner is not None else 4 * config.n_embd,
        tie_word_embeddings=True,
        scale_attn_weights=bool(config.scale_attn_weights),
        scale_attn_by_inverse_layer_idx=bool(config.scale_attn_by_inverse_layer_idx),
        **names,
        **rates,
    )


class GPT2Attention(LayerModule):
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
        out, cache = attention_block(self, q, k, v, key_mask, deterministic=deterministic,
                                     dropout_rate=arch.attention_dropout, prefix_kv=prefix_kv, cache=cache,
                                     scale=scale, implementation=self.attention_impl)
        out = dense(width, std, self.dtype, "c_proj", axes=("heads", "embed"))(out.reshape(batch, length, width))
        return nn.Dropout(arch.hidden_dropout)(out, deterministic=deterministic), cache


class GPT2Block(LayerModule):
    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        attn = GPT2Attention(arch, self.layer_idx, self.dtype, self.attention_impl, name="attn")
        mlp = MLP(arch.hidden_size, arch.intermediate_size, arch.activation, arch.initializer_range,
                  arch.hidden_dropout, self.dtype, name="mlp")
        norms = (layer_norm(arch.norm_eps, self.dtype, "ln_1"), layer_norm(arch.norm_eps, self.dtype, "ln_2"))
        return pre_norm_residual(x, lambda h: attn(h, key_mask, deterministic, prefix_kv, cache),
                                 lambda h: mlp(h, deterministic), norms, cache)


class GPT2Backbone(DecoderBackbone):
    """GPT-2 transformer: token + position embeddings, ``num_layers`` pre-LN blocks ``h``, final LayerNorm."""

    def setup(self):
        arch = self.arch
        init = nn.initializers.normal(arch.initializer_range)
        self.wte = nn.Embed(arch.vocab_size, arch.hidden_size, embedding_init=named(init, EMBEDDING),
                            dtype=self.dtype)
        self.wpe = nn.Embed(arch.max_positions, arch.hidden_size, embedding_init=named(init, (None, "embed")),
                            dtype=self.dtype)
        self.drop = nn.Dropout(arch.embd_dropout)
        self.h = self.layer_stack(GPT2Block, 3)  # h_0, h_1, ... (arg 3: deterministic)
        self.ln_f = layer_norm(arch.norm_eps, self.dtype)

    def __call__(self, inputs: BackboneInputs) -> BackboneOutput:
        """Run the transformer on :class:`~mgpt.models.layers.BackboneInputs`.

        ``position_ids`` default to ``0..T-1`` for every row (matches transformers for right-padded batches);
        token types are ignored. Prefix keys/values are ``(B, P, H, D)``; a cache is ``(B, S, H, D)`` per
        layer, its slot order the causal order.
        """
        arch = self.arch
        check_inputs(inputs, "GPT-2", arch.num_layers)
        x = inputs.inputs_embeds
        x = perturb_token_embeddings(self.wte(inputs.input_ids) if x is None else x.astype(self.dtype), inputs)
        position_ids = inputs.position_ids
        if position_ids is None:
            if x.shape[1] > arch.max_positions:  # jnp indexing would silently clamp
                raise ValueError(f"GPT-2: sequence length {x.shape[1]} exceeds n_positions={arch.max_positions}")
            position_ids = (segment_positions(inputs.attention_mask) if inputs.num_segments
                            else jnp.arange(x.shape[1])[None, :])
        x = constrain_hidden(self.drop(x + self.wpe(position_ids), deterministic=inputs.deterministic))
        return run_decoder_layers(self.h, x, (inputs.attention_mask,), inputs, self.ln_f, self.scan_layers,
                                  arch.num_layers)

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
    name="gpt2", is_decoder=True, base_prefix="transformer.",
    read_arch=read_arch, tensor_table=tensor_table, build_backbone=build_backbone, build_head=build_head,
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
    # llama.cpp stores the Conv1D kernels (in, out) transposed, as (out, in) like every other linear layer.
    gguf=GgufLayout("gpt2", GPT2_KEYS, transposed=r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$"),
    bench_sizes={
        "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
        "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024),
    },
))
