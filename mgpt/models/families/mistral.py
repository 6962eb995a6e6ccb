"""Mistral: the Llama decoder with a sliding attention window on every layer and no biases."""

from __future__ import annotations

import dataclasses
from typing import Optional

from mgpt.models.families import llama
from mgpt.models.family import register


def read_arch(config, dropout: Optional[float] = None) -> llama.LlamaArch:
    """Read a ``MistralConfig``: MistralModel windows every layer when ``sliding_window`` is set."""
    arch = llama.read_arch(config, dropout)
    return dataclasses.replace(arch, qkv_bias=False, o_bias=False, mlp_bias=False,
                               sliding_windows=(getattr(config, "sliding_window", None),) * arch.num_layers)


# llama.cpp writes Mistral as "llama"; transformers' GGUF reader tells them apart by general.name, and so does mgpt.
GGUF_LAYOUT = dataclasses.replace(llama.GGUF_LAYOUT, bias_flags=(), name_hint="mistral",
                                  config_keys=llama.GGUF_LAYOUT.config_keys
                                  + (("attention.sliding_window", "sliding_window"),))

FAMILY = register(llama.decoder_family("mistral", read_arch, "Mistral", gguf=GGUF_LAYOUT))
