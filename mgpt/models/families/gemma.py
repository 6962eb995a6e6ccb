"""Gemma: the Llama decoder with embeddings scaled by ``sqrt(hidden)``, RMSNorm weights applied as
``(1 + w)`` and (in its configs) a gelu-tanh gated MLP; no MLP bias."""

from __future__ import annotations

import dataclasses
from typing import Optional

from mgpt.models.families import llama
from mgpt.models.family import register
from mgpt.models.gguf_format import GgufLayout


def read_arch(config, dropout: Optional[float] = None) -> llama.LlamaArch:
    """Read a ``GemmaConfig``."""
    arch = llama.read_arch(config, dropout)
    return dataclasses.replace(arch, mlp_bias=False, gemma_norm=True, scale_embeddings=True)


# llama.cpp stores Gemma's norm weights with the 1 already added.
FAMILY = register(llama.decoder_family("gemma", read_arch, "Gemma", gguf=GgufLayout("gemma", norm_offset=1.0)))
