"""Phi-3: the Llama decoder with fused projections, partial RoPE and residual dropout.

What differs from Llama (transformers' ``modeling_phi3.py``): ``qkv_proj`` is one linear layer whose output
holds the queries, then the keys, then the values (``num_heads + 2 * num_kv_heads`` heads of ``head_dim``);
``gate_up_proj`` holds the gate, then the up projection; no biases; RoPE turns only the first
``head_dim * partial_rotary_factor`` dims of each head; ``resid_pdrop`` drops the attention and MLP outputs
before each residual add; one ``sliding_window`` (or none) for every layer. ``embd_pdrop`` is in the config
but Phi3Model never applies it, so neither does mgpt. "longrope" scaling (the 128k-context Phi-3 models) is
refused by the RoPE reader.

Param tree: Llama's with ``self_attn/qkv_proj`` instead of ``q/k/v_proj`` and ``mlp/gate_up_proj`` instead of
``gate/up_proj``, kept fused so the tensor table maps one to one (LoRA adapts the fused ``qkv_proj``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models.families import llama
from mgpt.models.family import register
from mgpt.models.gguf_format import GgufLayout
from mgpt.models.layers import GatedMLP, RMSNorm, dense, pre_norm_residual
from mgpt.models.mappings import Entry, add_rows

FUSED = {"self_attn": ("qkv_proj", ("q_proj", "k_proj", "v_proj")), "mlp": ("gate_up_proj", ("gate_proj", "up_proj"))}


def read_arch(config, dropout: Optional[float] = None) -> llama.LlamaArch:
    """Read a ``Phi3Config``; ``dropout`` overrides every rate (``resid_pdrop`` included)."""
    arch = llama.read_arch(config, dropout, partial_rotary=True)
    return dataclasses.replace(
        arch, qkv_bias=False, o_bias=False, mlp_bias=False,
        hidden_dropout=float(config.resid_pdrop if dropout is None else dropout),
        sliding_windows=(config.sliding_window,) * arch.num_layers)  # Phi3Model windows every layer when set


class Phi3Attention(llama.LlamaAttention):
    """Llama's attention with one ``qkv_proj`` split into queries, keys and values."""

    @nn.nowrap
    def project_qkv(self, x):
        arch = self.arch
        heads, kv_heads = arch.num_heads, arch.num_kv_heads
        qkv = dense((heads + 2 * kv_heads) * arch.head_dim, arch.initializer_range, self.dtype, "qkv_proj", False,
                    ("embed", "heads"))(x)
        qkv = qkv.reshape(*x.shape[:2], heads + 2 * kv_heads, arch.head_dim)
        return tuple(jnp.split(qkv, [heads, heads + kv_heads], axis=2))


class Phi3DecoderLayer(llama.LlamaDecoderLayer):
    """Llama's pre-norm layer with the fused MLP and ``resid_pdrop`` on both branches before their residual add."""

    attention_cls = Phi3Attention

    @nn.nowrap
    def feed_forward(self):
        arch = self.arch
        return GatedMLP(arch.hidden_size, arch.intermediate_size, arch.activation, arch.initializer_range,
                        dtype=self.dtype, fused=True, name="mlp")

    @nn.compact
    def __call__(self, x, cos, sin, key_mask, deterministic: bool, prefix_kv=None, cache=None):
        arch = self.arch
        drop = nn.Dropout(arch.hidden_dropout)
        attention = self.attention_cls(arch, self.layer_idx, self.dtype, self.attention_impl, name="self_attn")
        mlp = self.feed_forward()

        def attend(h):
            out, new_cache = attention(h, cos, sin, key_mask, deterministic, prefix_kv, cache)
            return drop(out, deterministic=deterministic), new_cache

        norms = (RMSNorm(arch.norm_eps, dtype=self.dtype, name="input_layernorm"),
                 RMSNorm(arch.norm_eps, dtype=self.dtype, name="post_attention_layernorm"))
        return pre_norm_residual(x, attend, lambda h: drop(mlp(h), deterministic=deterministic), norms, cache)


class Phi3Backbone(llama.LlamaBackbone):
    layer_cls = Phi3DecoderLayer


def build_backbone(spec) -> Phi3Backbone:
    return Phi3Backbone(spec.arch, spec.compute_dtype, spec.remat, spec.scan_layers, spec.attention_impl)


def tensor_table(spec) -> dict[str, Entry]:
    """Llama's table with the fused ``qkv_proj`` / ``gate_up_proj`` rows in place of the separate ones."""
    table = llama.tensor_table(spec)
    for i in range(spec.arch.num_layers):
        for block, (fused, parts) in FUSED.items():
            for part in parts:
                table.pop(f"layers.{i}.{block}.{part}.weight")
            add_rows(table, f"layers.{i}.{block}.{fused}", ("backbone", f"layers_{i}", block, fused), "linear",
                     bias=False)
    return table


PEFT_TARGETS = {
    "lora": r"self_attn/qkv_proj$",  # queries, keys and values live in one projection
    "ia3": r"(self_attn/qkv_proj|mlp/down_proj)$",  # fused, so q is scaled with k and v (as GPT-2's c_attn)
    "ia3_feedforward": r"mlp/down_proj$",
    "adapter_attention": r"self_attn/o_proj$",
    "adapter_ffn": r"mlp/down_proj$",
}
BENCH_SIZES = {  # Phi-3-mini-4k's shape
    "phi3-mini": dict(hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      intermediate_size=8192, vocab_size=32064, max_position_embeddings=4096, pad_token_id=32000),
}

FAMILY = register(llama.decoder_family("phi3", read_arch, "Phi3", BENCH_SIZES, build_backbone=build_backbone,
                                       tensor_table=tensor_table, peft_targets=PEFT_TARGETS,
                                       gguf=GgufLayout("phi3")))
