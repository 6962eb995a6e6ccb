"""Phi-3: the Llama decoder with fused projections, partial RoPE and residual dropout.

What differs from Llama (transformers' ``modeling_phi3.py``): ``qkv_proj`` is one linear layer whose output
holds the queries, then the keys, then the values (``num_heads + 2 * num_kv_heads`` heads); ``gate_up_proj``
holds the gate, then the up projection; no biases anywhere; RoPE turns only the first
``head_dim * partial_rotary_factor`` dims of each head; ``resid_pdrop`` drops the attention and MLP outputs
before each residual add; one ``sliding_window`` (or none) for every layer. ``embd_pdrop`` is in the config
but Phi3Model never applies it, so neither does mgpt. "longrope" scaling (Phi-3 128k) is not supported.

Param tree: Llama's with ``self_attn/qkv_proj`` instead of q/k/v_proj and ``mlp/gate_up_proj`` instead of
gate/up_proj (kept fused, so the tensor table maps one to one).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from mgpt.models.llama import LlamaArch


def read_arch(config, dropout: Optional[float] = None) -> LlamaArch:
    """A transformers ``Phi3Config`` as mgpt's decoder arch; ``dropout`` overrides every rate."""
    arch = LlamaArch.from_hf(config, dropout, partial_rotary=True)
    window = config.sliding_window  # Phi3Model windows every layer when it is set
    resid = float(config.resid_pdrop if dropout is None else dropout)
    return dataclasses.replace(arch, qkv_bias=False, o_bias=False, mlp_bias=False, fused_qkv=True,
                               fused_gate_up=True, resid_dropout=resid, sliding_windows=(window,) * arch.num_layers)
