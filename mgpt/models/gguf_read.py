"""A llama.cpp GGUF file in: its metadata as a transformers config, its tensors as transformers-named arrays,
its tokenizer and chat template.

The file is opened with the ``gguf`` package (llama.cpp's own Python reader, memory-mapped); tensors are read one
at a time and dequantized from any type the package decodes (F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1, the K-quants,
...). :class:`GgufTensors` is the tensor source :func:`mgpt.models.loading.load_params` reads, exactly like a
safetensors directory, so dtype, sharding and the load report work the same. The family comes from
``general.architecture`` (:class:`mgpt.models.gguf_format.GgufLayout` of each family).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from typing import Iterator

import numpy as np

from mgpt.models.family import Family, all_families
from mgpt.models.gguf_format import TOKEN_ID_KEYS, GgufLayout, to_gguf_name, to_hf_tensor
from mgpt.models.safetensors_io import CheckpointError

SUFFIX = ".gguf"


def is_gguf(name_or_path) -> bool:
    """Whether ``name_or_path`` names a GGUF file (by its suffix; it need not exist yet)."""
    return os.fspath(name_or_path).lower().endswith(SUFFIX)


@functools.lru_cache(maxsize=4)
def _open(path: str, mtime: float):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # a bad magic, a truncated header or tensor block, an unknown value type
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def open_gguf(path: str):
    """The file's ``GGUFReader`` (cached while the file is unchanged); a missing or malformed file raises
    :class:`CheckpointError` naming it."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(path):
        raise CheckpointError(f"GGUF file not found: {path}")
    reader = _open(path, os.path.getmtime(path))
    if "general.architecture" not in reader.fields:
        raise CheckpointError(f"{path}: GGUF metadata has no general.architecture")
    return reader


def metadata(reader) -> dict:
    """The file's metadata as plain Python values (strings, numbers, lists)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def gguf_families() -> dict[str, list[Family]]:
    """``general.architecture`` -> the mgpt families stored under it."""
    out: dict[str, list[Family]] = {}
    for family in all_families():
        if family.gguf is not None:
            out.setdefault(family.gguf.arch, []).append(family)
    return out


def family_of(path: str, meta: dict) -> Family:
    """The family of a GGUF file: its architecture, and ``general.name`` where two families share one."""
    arch = meta["general.architecture"]
    candidates = gguf_families().get(arch)
    if not candidates:
        known = sorted(gguf_families())
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not one mgpt has; it reads {known}")
    name = str(meta.get("general.name", "")).lower()
    hinted = [f for f in candidates if f.gguf.name_hint and f.gguf.name_hint in name]
    plain = [f for f in candidates if not f.gguf.name_hint]
    return (hinted or plain or candidates)[0]


def _refuse_unsupported(path: str, arch: str, meta: dict, tensor_names) -> None:
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"{path}: RoPE scaling {scaling!r} ({arch}.rope.scaling.type) is not supported "
                              "when reading GGUF; convert the original Hugging Face checkpoint instead")
    if "rope_freqs.weight" in tensor_names:
        raise CheckpointError(f"{path}: has rope_freqs.weight (Llama 3.1-style RoPE scaling), which mgpt does not "
                              "read from GGUF; load the original Hugging Face checkpoint instead")


def hf_config(path: str):
    """The transformers config of a GGUF file, built from its metadata (architecture, sizes, RoPE base, norm
    epsilon, biases and tied embeddings from the tensors present, special-token ids, the vocabulary size)."""
    from transformers import AutoConfig

    reader = open_gguf(path)
    meta = metadata(reader)
    tensor_names = {t.name for t in reader.tensors}
    family = family_of(path, meta)
    layout: GgufLayout = family.gguf
    arch = meta["general.architecture"]
    _refuse_unsupported(path, arch, meta, tensor_names)
    kwargs = {attr: meta[f"{arch}.{key}"] for key, attr in layout.config_keys if f"{arch}.{key}" in meta}
    kwargs.update({attr: tensor in tensor_names for tensor, attr in layout.bias_flags})
    kwargs.update({attr: int(meta[key]) for key, attr in TOKEN_ID_KEYS if key in meta})
    kwargs["tie_word_embeddings"] = "output.weight" not in tensor_names
    if "vocab_size" not in kwargs:
        tokens = meta.get("tokenizer.ggml.tokens")
        embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        if tokens is not None:
            kwargs["vocab_size"] = len(tokens)
        elif embedding is not None:
            kwargs["vocab_size"] = int(embedding.shape[-1])
    for key in (f"{arch}.block_count", f"{arch}.embedding_length", f"{arch}.attention.head_count"):
        if key not in meta:
            raise CheckpointError(f"{path}: GGUF metadata lacks {key}, needed to build the {family.name} model")
    try:
        config = AutoConfig.for_model(family.name, **kwargs)
    except Exception as exc:
        raise CheckpointError(f"{path}: its metadata does not make a valid {family.name} config ({exc})") from exc
    config.architectures = [family.hf_architecture("causal_lm")]
    return config


class GgufTensors:
    """A GGUF file's tensors under their transformers names (``model.layers.0.self_attn.q_proj.weight``),
    in transformers' layout, dequantized one by one; what :func:`mgpt.models.loading.load_params` reads.

    Tensors llama.cpp has but the family's table does not keep their GGUF names, so the loader's check names
    them as the file does.
    """

    def __init__(self, path: str, spec):
        from mgpt.models.mappings import mapping_table
        from mgpt.models.spec import make_spec

        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.where = self.path
        reader = open_gguf(self.path)
        family = family_of(self.path, metadata(reader))
        self.layout: GgufLayout = family.gguf
        arch = spec.arch
        self.heads, self.kv_heads = arch.num_heads, arch.num_kv_heads
        # GGUF holds a causal LM; its table names every tensor the file can have (lm_head when untied).
        lm_spec = spec if spec.task == "causal_lm" else make_spec(spec.hf_config, "causal_lm", dtype=spec.dtype)
        name_map = self.layout.tensor_names(arch.num_layers)
        to_hf = {}
        for name, entry in mapping_table(lm_spec).items():
            full = name if entry.role == "head" else family.base_prefix + name
            gguf_name = to_gguf_name(name_map, full)
            if gguf_name is not None:
                to_hf[gguf_name] = full
        self._tensors = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for tensor in reader.tensors:
            hf_name = to_hf.get(tensor.name, tensor.name)
            shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGML lists dims innermost first
            if self.layout.transposed and hf_name != tensor.name and re.search(self.layout.transposed, hf_name):
                shape = shape[::-1]
            self._tensors[hf_name] = tensor
            self.shapes[hf_name] = shape
        self.files = (os.path.basename(self.path),)

    def read(self, names) -> Iterator[tuple[str, np.ndarray]]:
        """``(transformers name, float array)`` for each of ``names``, one tensor in memory at a time."""
        from gguf import GGMLQuantizationType, dequantize

        for name in names:
            tensor = self._tensors[name]
            try:
                if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
                    array = np.asarray(tensor.data)
                else:
                    array = dequantize(tensor.data, tensor.tensor_type)
                array = array.reshape(tuple(int(d) for d in reversed(tensor.shape.tolist())))
            except Exception as exc:
                raise CheckpointError(f"{self.path}: tensor {tensor.name} ({tensor.tensor_type.name}) could not be "
                                      f"decoded ({type(exc).__name__}: {exc})") from exc
            yield name, to_hf_tensor(self.layout, tensor.name, name, array, self.heads, self.kv_heads)


def gguf_tokenizer(path: str):
    """The fast tokenizer (with its chat template) built from the file's metadata by transformers, or None
    when the file carries no tokenizer."""
    try:  # not AutoTokenizer: that also needs a config transformers can read
        from transformers import TokenizersBackend as FastTokenizer  # transformers 5
    except ImportError:
        from transformers import PreTrainedTokenizerFast as FastTokenizer  # transformers 4

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if "tokenizer.ggml.tokens" not in open_gguf(path).fields:
        return None
    try:  # from an empty directory: tokenizer files beside the .gguf would otherwise override its metadata
        with tempfile.TemporaryDirectory() as empty:
            return FastTokenizer.from_pretrained(empty, gguf_file=path)
    except Exception as exc:
        raise CheckpointError(f"{path}: could not build a tokenizer from its GGUF metadata "
                              f"({type(exc).__name__}: {exc})") from exc
