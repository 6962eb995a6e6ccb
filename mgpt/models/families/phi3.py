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

from mgpt.models.families import llama
from mgpt.models.family import register
from mgpt.models.mappings import Entry, add_rows

FUSED = {"self_attn": ("qkv_proj", ("q_proj", "k_proj", "v_proj")), "mlp": ("gate_up_proj", ("gate_proj", "up_proj"))}


def read_arch(config, dropout: Optional[float] = None) -> llama.LlamaArch:
    """Read a ``Phi3Config``; ``dropout`` overrides every rate (``resid_pdrop`` included)."""
    arch = llama.read_arch(config, dropout, partial_rotary=True)
    return dataclasses.replace(
        arch, qkv_bias=False, o_bias=False, mlp_bias=False, fused_qkv=True, fused_gate_up=True,
        hidden_dropout=float(config.resid_pdrop if dropout is None else dropout),
        sliding_windows=(config.sliding_window,) * arch.num_layers)  # Phi3Model windows every layer when set


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

FAMILY = register(llama.decoder_family("phi3", read_arch, "Phi3", BENCH_SIZES, tensor_table=tensor_table,
                                       peft_targets=PEFT_TARGETS))
