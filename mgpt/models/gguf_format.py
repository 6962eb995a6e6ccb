"""What the GGUF reader and writer share: each family's layout in llama.cpp's format, names and tensor transforms.

A family that llama.cpp also runs declares a :class:`GgufLayout` (``Family.gguf``): its ``general.architecture``,
the metadata keys that carry its transformers config fields, and how llama.cpp's tensors differ from
transformers' (q/k rows permuted for llama.cpp's RoPE, Gemma's norm weights stored as ``1 + w``, GPT-2's Conv1D
kernels transposed). Tensor names are translated by the ``gguf`` package's own table (``TensorNameMap``), the one
llama.cpp's converter uses. Reading is :mod:`mgpt.models.gguf_read`; writing :mod:`mgpt.models.gguf_export`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import numpy as np

# The transformers config fields of a Llama-style decoder and their llama.cpp metadata keys (after "<arch>.").
DECODER_KEYS = (
    ("context_length", "max_position_embeddings"),
    ("embedding_length", "hidden_size"),
    ("block_count", "num_hidden_layers"),
    ("feed_forward_length", "intermediate_size"),
    ("attention.head_count", "num_attention_heads"),
    ("attention.head_count_kv", "num_key_value_heads"),
    ("attention.key_length", "head_dim"),
    ("attention.value_length", "head_dim"),
    ("rope.freq_base", "rope_theta"),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ("vocab_size", "vocab_size"),
)
GPT2_KEYS = (
    ("context_length", "n_positions"),
    ("embedding_length", "n_embd"),
    ("block_count", "n_layer"),
    ("feed_forward_length", "n_inner"),
    ("attention.head_count", "n_head"),
    ("attention.layer_norm_epsilon", "layer_norm_epsilon"),
    ("vocab_size", "vocab_size"),
)
# Tokenizer ids in the metadata and the transformers config fields they set.
TOKEN_ID_KEYS = (
    ("tokenizer.ggml.bos_token_id", "bos_token_id"),
    ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ("tokenizer.ggml.padding_token_id", "pad_token_id"),
)


@dataclasses.dataclass(frozen=True)
class GgufLayout:
    """How a family's checkpoints look in llama.cpp's GGUF format.

    arch: ``general.architecture`` (llama.cpp writes Mistral as ``"llama"``).
    config_keys: ``(metadata key after "<arch>.", transformers config field)`` pairs.
    bias_flags: ``(GGUF tensor of layer 0, config field)``: the field is True when the tensor is present.
    permute_qk: llama.cpp interleaves the rows of q/k projections (its RoPE pairs adjacent dims).
    norm_offset: added to every norm weight on export and taken off on import (Gemma's ``1 + w``).
    transposed: regex over transformers tensor names stored transposed in GGUF (GPT-2's Conv1D kernels).
    name_hint: for an ``arch`` two families share, a ``general.name`` substring that picks this one.
    """

    arch: str
    config_keys: tuple[tuple[str, str], ...] = DECODER_KEYS
    bias_flags: tuple[tuple[str, str], ...] = ()
    permute_qk: bool = False
    norm_offset: float = 0.0
    transposed: str = ""
    name_hint: str = ""

    def tensor_names(self, num_layers: int):
        """The ``gguf`` package's transformers -> GGUF tensor-name map for this architecture."""
        import gguf

        arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch)
        return gguf.get_tensor_name_map(arch_id, num_layers)


def to_gguf_name(name_map, hf_name: str) -> Optional[str]:
    """The GGUF name of a transformers tensor name (``model.layers.0.self_attn.q_proj.weight`` ->
    ``blk.0.attn_q.weight``), or None when llama.cpp has no such tensor."""
    return name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def _interleave(weight: np.ndarray, heads: int, inverse: bool) -> np.ndarray:
    """llama.cpp's q/k row order: within each head, rows (i, i + d/2) become adjacent (and back)."""
    half = weight.shape[0] // heads // 2
    if inverse:
        return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


_Q = re.compile(r"\.attn_q\.(weight|bias)$")
_K = re.compile(r"\.attn_k\.(weight|bias)$")
_NORM = re.compile(r"_norm\.weight$")


def to_hf_tensor(layout: GgufLayout, gguf_name: str, hf_name: str, array: np.ndarray, num_heads: int,
                 num_kv_heads: int) -> np.ndarray:
    """A GGUF tensor (numpy order) as transformers stores it."""
    if layout.permute_qk and _Q.search(gguf_name):
        array = _interleave(array, num_heads, inverse=True)
    elif layout.permute_qk and _K.search(gguf_name):
        array = _interleave(array, num_kv_heads, inverse=True)
    if layout.norm_offset and _NORM.search(gguf_name):
        array = array - np.asarray(layout.norm_offset, array.dtype)
    if layout.transposed and re.search(layout.transposed, hf_name):
        array = array.T
    return array


def from_hf_tensor(layout: GgufLayout, gguf_name: str, hf_name: str, array: np.ndarray, num_heads: int,
                   num_kv_heads: int) -> np.ndarray:
    """A transformers tensor as llama.cpp stores it (the inverse of :func:`to_hf_tensor`)."""
    if layout.transposed and re.search(layout.transposed, hf_name):
        array = array.T
    if layout.norm_offset and _NORM.search(gguf_name):
        array = array + np.asarray(layout.norm_offset, array.dtype)
    if layout.permute_qk and _Q.search(gguf_name):
        array = _interleave(array, num_heads, inverse=False)
    elif layout.permute_qk and _K.search(gguf_name):
        array = _interleave(array, num_kv_heads, inverse=False)
    return np.ascontiguousarray(array)
