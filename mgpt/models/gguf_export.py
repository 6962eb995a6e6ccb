"""mgpt params out as one llama.cpp GGUF file (f32, f16 or q8_0), with its config and tokenizer in the metadata.

Tensors come from the same plan as the Hugging Face export (:func:`mgpt.models.hf_export.export_plan`, scanned
layers sliced one at a time), are renamed by the ``gguf`` package's table and put in llama.cpp's layout
(:mod:`mgpt.models.gguf_format`), then written one at a time through ``GGUFWriter``'s temporary file. As in
llama.cpp's converter, 1-D tensors (norms, biases) stay F32 and Q8_0 applies to 2-D weights whose rows are a
multiple of its 32-value block (others fall back to F16). The metadata holds ``general.*``, the family's
config keys, and the tokenizer (:mod:`mgpt.models.gguf_vocab`). The reader is :mod:`mgpt.models.gguf_read`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import numpy as np

from mgpt.models import gguf_vocab
from mgpt.models.family import get_family
from mgpt.models.gguf_format import TOKEN_ID_KEYS, GgufLayout, from_hf_tensor, to_gguf_name
from mgpt.models.hf_export import export_plan
from mgpt.models.layers.rotary import rope_parameters
from mgpt.models.safetensors_io import CheckpointError
from mgpt.models.spec import ModelSpec

logger = logging.getLogger("mgpt")

# The dtypes the gguf package can write from numpy (the K-quants it only reads).
DTYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
BLOCKED = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0")  # 32-value blocks along each row
Q8_BLOCK = 32


def _types(dtype: str):
    """``(GGMLQuantizationType, LlamaFileType)`` of a dtype name."""
    import gguf

    if dtype == "f32":
        return gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32
    return gguf.GGMLQuantizationType[dtype.upper()], gguf.LlamaFileType[f"MOSTLY_{dtype.upper()}"]


def tensor_type(array: np.ndarray, dtype: str):
    """The GGML type a tensor is stored as: F32 for 1-D; a blocked type only where rows split into
    32-value blocks (else F16)."""
    import gguf

    t = gguf.GGMLQuantizationType
    if array.ndim < 2 or dtype == "f32":
        return t.F32
    if dtype in BLOCKED and (array.ndim != 2 or array.shape[-1] % Q8_BLOCK):
        return t.F16
    return _types(dtype)[0]


def _scalar(value):
    """``(value, GGUFValueType name)`` of a config number (counts as uint32, real numbers as float32)."""
    if isinstance(value, bool):
        return bool(value), "BOOL"
    if isinstance(value, (int, np.integer)):
        return int(value), "UINT32"
    return float(value), "FLOAT32"


def config_fields(spec: ModelSpec, layout: GgufLayout) -> gguf_vocab.Fields:
    """``<arch>.*`` metadata from the transformers config: the layout's keys (None skipped), the RoPE base and
    rotary width; RoPE scaling, which mgpt's GGUF reader refuses, is refused here too."""
    config, arch = spec.hf_config, layout.arch
    fields: gguf_vocab.Fields = {}
    has_rope = any(key == "rope.freq_base" for key, _ in layout.config_keys)
    if has_rope:
        theta, scaling = rope_parameters(config, partial_rotary=True)
        scaling = dict(scaling)
        factor = scaling.pop("partial_rotary_factor", 1.0)
        if scaling.get("rope_type", "default") != "default":
            raise CheckpointError(f"save_gguf: {spec.family} RoPE scaling {scaling} cannot be written to GGUF "
                                  "(mgpt reads no RoPE scaling from GGUF); export a Hugging Face directory instead")
        fields[f"{arch}.rope.dimension_count"] = (int(spec.arch.head_dim * factor), "UINT32", None)
    for key, attr in layout.config_keys:
        value = theta if attr == "rope_theta" else getattr(config, attr, None)
        if value is not None:
            fields[f"{arch}.{key}"] = (*_scalar(value), None)
    for key, attr in TOKEN_ID_KEYS:  # the model's own ids; a tokenizer's replace them
        value = getattr(config, attr, None)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            fields[key] = (int(value), "UINT32", None)
    return fields


def _general_name(spec: ModelSpec, layout: GgufLayout, name: Optional[str]) -> str:
    name = name or os.path.splitext(os.path.basename(os.path.normpath(spec.name_or_path or "")))[0] or spec.family
    if layout.name_hint and layout.name_hint not in name.lower():  # readers tell shared architectures by name
        name = f"{layout.name_hint}-{name}"
    return name


def _tokenizer_fields(spec: ModelSpec, tokenizer) -> gguf_vocab.Fields:
    if tokenizer is None:
        logger.warning("save_gguf: no tokenizer given; the file holds weights and config only")
        return {}
    from mgpt.models import gguf_read

    if gguf_read.is_gguf(spec.name_or_path) and os.path.isfile(spec.name_or_path):
        return gguf_vocab.copied_fields(gguf_read.open_gguf(spec.name_or_path))
    return gguf_vocab.bpe_fields(tokenizer, spec.arch.vocab_size)


def save_gguf(path: str | os.PathLike, model_or_spec: Any, params: dict, tokenizer=None, dtype: str = "f16",
              name: Optional[str] = None) -> str:
    """Write a causal LM as one GGUF file that llama.cpp and transformers' GGUF loader read.

    ``dtype``: "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1" or "q4_0" for the 2-D weights (1-D tensors
    stay F32; the blocked types need rows that are a multiple of 32, others are written F16 and logged). Tied embeddings write no ``output.weight``. The
    tokenizer: a model loaded from a GGUF file keeps that file's ``tokenizer.*`` fields; otherwise a fast
    byte-level BPE tokenizer is written as ``tokenizer.ggml.model = "gpt2"`` with its chat template; another
    kind raises :class:`CheckpointError`; ``tokenizer=None`` writes the weights and config only.
    ``name``: ``general.name`` (default: the source's file or directory name).
    """
    import gguf

    spec: ModelSpec = getattr(model_or_spec, "spec", model_or_spec)
    path = os.fspath(path)
    if dtype not in DTYPES:
        raise CheckpointError(f"save_gguf: dtype {dtype!r} is not one of {DTYPES}")
    if spec.task != "causal_lm":
        raise CheckpointError(f"save_gguf: GGUF holds causal language models; this model's task is {spec.task!r}")
    family = get_family(spec.family)
    layout: GgufLayout = family.gguf
    if layout is None:
        raise CheckpointError(f"save_gguf: llama.cpp has no GGUF architecture for the {spec.family} family")
    metadata = config_fields(spec, layout)
    metadata.update(_tokenizer_fields(spec, tokenizer))  # before the tensors: a refused tokenizer writes nothing
    plan, produce = export_plan(spec, params)
    name_map = layout.tensor_names(spec.arch.num_layers)
    targets = []
    for full, _, _ in plan:
        gguf_name = to_gguf_name(name_map, full)
        if gguf_name is None:
            raise CheckpointError(f"save_gguf: tensor {full} has no name in llama.cpp's {layout.arch} table")
        targets.append((full, gguf_name))

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"  # a failed export leaves no file that looks complete
    writer = gguf.GGUFWriter(partial, layout.arch, use_temp_file=True)
    try:
        writer.add_name(_general_name(spec, layout, name))
        writer.add_file_type(int(_types(dtype)[1]))
        if dtype in BLOCKED:
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, (value, vtype, sub) in metadata.items():
            writer.add_key_value(key, value, gguf.GGUFValueType[vtype],
                                 sub_type=gguf.GGUFValueType[sub] if sub else None)
        fallback = []
        for full, gguf_name in targets:
            array = np.asarray(produce(full)).astype(np.float32)
            array = from_hf_tensor(layout, gguf_name, full, array, spec.arch.num_heads, spec.arch.num_kv_heads)
            qtype = tensor_type(array, dtype)
            if dtype in BLOCKED and qtype == gguf.GGMLQuantizationType.F16 and array.ndim >= 2:
                fallback.append(gguf_name)
            plain = qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
            writer.add_tensor(gguf_name, gguf.quants.quantize(array, qtype), raw_dtype=None if plain else qtype)
        if fallback:
            logger.info("save_gguf: rows not a multiple of %d, written F16 instead of %s: %s", Q8_BLOCK, dtype.upper(),
                        fallback)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        writer.close()
        if os.path.exists(partial):
            os.remove(partial)
        raise
    os.replace(partial, path)
    logger.info("saved %s causal LM as GGUF (%s, %d tensors) to %s", spec.family, dtype, len(targets), path)
    return path
