"""Qwen2 / Qwen2.5: the Llama decoder with q/k/v biases (no o_proj or MLP bias) and optional per-layer
sliding windows (``use_sliding_window`` with ``layer_types``)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from mgpt.models.families import llama
from mgpt.models.family import register
from mgpt.models.gguf_format import GgufLayout


def _sliding_windows(config, layers: int) -> tuple:
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is not None and layer_types:
        return tuple(window if kind == "sliding_attention" else None for kind in layer_types)
    return (None,) * layers


def read_arch(config, dropout: Optional[float] = None) -> llama.LlamaArch:
    """Read a ``Qwen2Config``."""
    arch = llama.read_arch(config, dropout)
    return dataclasses.replace(arch, qkv_bias=True, o_bias=False, mlp_bias=False,
                               sliding_windows=_sliding_windows(config, arch.num_layers))


FAMILY = register(llama.decoder_family("qwen2", read_arch, "Qwen2", gguf=GgufLayout("qwen2")))
