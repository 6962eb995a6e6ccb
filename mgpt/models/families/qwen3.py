"""Qwen3: the Llama decoder with an RMSNorm over ``head_dim`` on every query and key head before RoPE.

What differs from Llama (transformers' ``modeling_qwen3.py``): ``q_norm``/``k_norm`` per head (weights
``(head_dim,)``, the decoder's ``rms_norm_eps``); ``head_dim`` is its own config field (128 by default, not
``hidden_size / num_attention_heads``); ``attention_bias`` puts a bias on q/k/v *and* o_proj; the MLP has no
bias; with ``use_sliding_window`` the layers typed "sliding_attention" (from ``max_window_layers`` on, or
as ``layer_types`` says) attend within ``sliding_window``.

Param tree: Llama's, plus ``layers_{i}/self_attn/{q_norm,k_norm}/scale`` ``(head_dim,)``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn

from mgpt.models.families import llama
from mgpt.models.family import register
from mgpt.models.gguf_format import GgufLayout
from mgpt.models.layers import RMSNorm
from mgpt.models.mappings import Entry, add_rows


def read_arch(config, dropout: Optional[float] = None) -> llama.LlamaArch:
    """Read a ``Qwen3Config``; ``dropout`` overrides every rate."""
    arch = llama.read_arch(config, dropout)
    bias = bool(getattr(config, "attention_bias", False))
    window = config.sliding_window  # None unless use_sliding_window (Qwen3Config.__post_init__)
    windows = tuple(window if window is not None and kind == "sliding_attention" else None
                    for kind in config.layer_types)
    return dataclasses.replace(arch, qkv_bias=bias, o_bias=bias, mlp_bias=False, sliding_windows=windows)


def tensor_table(spec) -> dict[str, Entry]:
    """Llama's table plus each layer's ``self_attn.q_norm`` / ``self_attn.k_norm``."""
    table = llama.tensor_table(spec)
    for i in range(spec.arch.num_layers):
        for name in ("q_norm", "k_norm"):
            add_rows(table, f"layers.{i}.self_attn.{name}", ("backbone", f"layers_{i}", "self_attn", name),
                     "layernorm", bias=False)
    return table


class Qwen3Attention(llama.LlamaAttention):
    """Llama's attention with ``q_norm``/``k_norm`` on each head of the projected queries and keys."""

    @nn.nowrap
    def project_qkv(self, x):
        q, k, v = super().project_qkv(x)
        arch = self.arch
        q = RMSNorm(arch.norm_eps, dtype=self.dtype, name="q_norm")(q)
        k = RMSNorm(arch.norm_eps, dtype=self.dtype, name="k_norm")(k)
        return q, k, v


class Qwen3DecoderLayer(llama.LlamaDecoderLayer):
    attention_cls = Qwen3Attention


class Qwen3Backbone(llama.LlamaBackbone):
    layer_cls = Qwen3DecoderLayer


def build_backbone(spec) -> Qwen3Backbone:
    return Qwen3Backbone(spec.arch, spec.compute_dtype, spec.remat, spec.scan_layers, spec.attention_impl)


BENCH_SIZES = {  # Qwen3-0.6B's shape
    "qwen3-0.6b": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=3072, vocab_size=151936, max_position_embeddings=40960,
                       tie_word_embeddings=True),
}

FAMILY = register(llama.decoder_family("qwen3", read_arch, "Qwen3", BENCH_SIZES, build_backbone=build_backbone,
                                       tensor_table=tensor_table,
                                       gguf=GgufLayout("qwen3", bias_flags=(("blk.0.attn_q.bias", "attention_bias"),))))
