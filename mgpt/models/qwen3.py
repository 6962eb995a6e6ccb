"""Qwen3: the Llama decoder with an RMSNorm over ``head_dim`` on every query and key head before RoPE.

What differs from Llama (transformers' ``modeling_qwen3.py``): ``q_norm``/``k_norm`` per head (weights
``(head_dim,)``, the decoder's ``rms_norm_eps``); ``head_dim`` is its own config field (128 by default,
not ``hidden_size / num_attention_heads``); ``attention_bias`` puts a bias on q/k/v *and* o_proj; the MLP
has no bias; ``use_sliding_window`` windows the layers from ``max_window_layers`` on (``layer_types``).

Param tree: Llama's, plus ``layers_{i}/self_attn/{q_norm,k_norm}/scale``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from mgpt.models.llama import LlamaArch


def read_arch(config, dropout: Optional[float] = None) -> LlamaArch:
    """A transformers ``Qwen3Config`` as mgpt's decoder arch; ``dropout`` overrides every rate."""
    arch = LlamaArch.from_hf(config, dropout)
    bias = bool(getattr(config, "attention_bias", False))
    window = config.sliding_window  # None unless use_sliding_window (Qwen3Config.__post_init__)
    windows = tuple(window if window is not None and kind == "sliding_attention" else None
                    for kind in config.layer_types)
    return dataclasses.replace(arch, qkv_bias=bias, o_bias=bias, mlp_bias=False, qk_norm=True,
                               sliding_windows=windows)
