"""mgpt params out as a Hugging Face checkpoint: config.json, safetensors (sharded above a size) and tokenizer files.

The family's mapping table (:mod:`mgpt.models.mappings`) is read backwards. Tensors are fetched from their
devices, transposed and written one at a time, so exporting a large model does not gather a host copy of it.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from flax import traverse_util

from mgpt.models import safetensors_io as st
from mgpt.models.mappings import architecture, base_prefix, mapping_table
from mgpt.models.safetensors_io import CheckpointError
from mgpt.models.spec import ModelSpec

logger = logging.getLogger("mgpt")


def export_plan(spec: ModelSpec, params: dict) -> tuple[list[tuple[str, np.dtype, tuple]], Callable[[str], np.ndarray]]:
    """``(plan, produce)``: transformers names with dtype and shape in table order, and a function giving each
    tensor as a host array (transposed to PyTorch's layout) when asked, so only one is on the host at a time."""
    table = mapping_table(spec)
    flat = traverse_util.flatten_dict(dict(params))
    if spec.scan_layers:  # export per layer, each sliced from the stack only when written
        flat = _layer_views(flat, spec)
    known = {entry.path for entry in table.values()}
    extra = sorted("/".join(p) for p in flat if p not in known)
    if extra:
        raise CheckpointError(f"save_pretrained: parameters with no transformers name: {extra}")
    absent = sorted(name for name, e in table.items() if e.path not in flat)
    if absent:
        raise CheckpointError(f"save_pretrained: params lack tensors for: {absent}")
    prefix = base_prefix(spec.family)
    plan, sources = [], {}
    for name, entry in table.items():
        value = flat[entry.path]
        full = name if entry.role == "head" else prefix + name
        shape = tuple(value.shape)[::-1] if entry.transpose else tuple(value.shape)
        plan.append((full, np.dtype(value.dtype), shape))
        sources[full] = (value, entry.transpose)

    def produce(full: str) -> np.ndarray:
        value, transpose = sources[full]
        if isinstance(value, _LayerView):
            value = value.stacked[value.index]
        array = np.asarray(jax.device_get(value))
        return array.T if transpose else array

    return plan, produce


class _LayerView:
    """Layer ``index`` of a scanned (stacked) parameter, not sliced until read."""

    def __init__(self, stacked, index: int):
        self.stacked, self.index = stacked, index
        self.shape, self.dtype = tuple(stacked.shape[1:]), stacked.dtype


def _layer_views(flat: dict, spec: ModelSpec) -> dict:
    """Flat scanned params -> flat per-layer paths (``backbone/h_3/...``) holding :class:`_LayerView` s."""
    from mgpt.models.scan import layer_stack

    name, count = layer_stack(spec)
    out = {}
    for path, value in flat.items():
        if path[:2] == ("backbone", name):
            for i in range(count):
                out[("backbone", f"{name}_{i}") + path[2:]] = _LayerView(value, i)
        else:
            out[path] = value
    return out


def hf_state_dict(spec: ModelSpec, params: dict) -> dict[str, np.ndarray]:
    """mgpt params -> transformers tensors (names as the task's *For<Task> model expects), via the mapping table."""
    plan, produce = export_plan(spec, params)
    return {name: np.ascontiguousarray(produce(name)) for name, _, _ in plan}


def export_config(spec: ModelSpec, tokenizer=None, label_names: Optional[Sequence[str]] = None,
                  dtype: Optional[str] = None):
    """The transformers config written next to the weights: architecture, labels, pad id, problem type, dtype."""
    arch_name = architecture(spec.family, spec.task)
    if arch_name is None:
        raise ValueError(f"save_pretrained: no transformers class for {spec.family} {spec.task}")
    config = copy.deepcopy(spec.hf_config)
    config.architectures = [arch_name]
    if spec.task != "causal_lm":
        config.num_labels = spec.num_labels
        if label_names is not None:
            if len(label_names) != spec.num_labels:
                raise ValueError(f"save_pretrained: {len(label_names)} label names for num_labels={spec.num_labels}")
            config.id2label = {i: str(n) for i, n in enumerate(label_names)}
            config.label2id = {str(n): i for i, n in enumerate(label_names)}
        config.problem_type = "regression" if spec.task == "regression" else None
    decoder_sequence = spec.is_decoder and spec.task in ("sequence_classification", "regression")
    if decoder_sequence and config.pad_token_id is None:
        # *ForSequenceClassification of decoders needs a pad id to find the last real token.
        config.pad_token_id = tokenizer.pad_token_id if tokenizer is not None else config.eos_token_id
    if dtype is not None:  # transformers loads with dtype="auto" from this field
        config.dtype = dtype
    return config


def save_pretrained(
    out_dir: str | os.PathLike,
    model_or_spec: Any,
    params: dict,
    tokenizer=None,
    label_names: Optional[Sequence[str]] = None,
    max_shard_size: int | str = "5GB",
) -> str:
    """Write ``config.json``, the safetensors weights (transformers names) and the tokenizer files.

    The result loads with transformers' ``AutoModelFor<Task>`` (SequenceClassification, TokenClassification,
    CausalLM) and gives the same logits. ``label_names`` become ``id2label``/``label2id``. Weights go to
    ``model.safetensors``, or to numbered shards with ``model.safetensors.index.json`` when they exceed
    ``max_shard_size`` (bytes, or a string like "2GB"). Tensors keep the params' dtype.
    """
    spec: ModelSpec = getattr(model_or_spec, "spec", model_or_spec)
    out_dir = os.fspath(out_dir)
    plan, produce = export_plan(spec, params)
    dtypes = {dtype for _, dtype, _ in plan}
    config = export_config(spec, tokenizer, label_names, dtype=dtypes.pop().name if len(dtypes) == 1 else None)
    os.makedirs(out_dir, exist_ok=True)
    config.save_pretrained(out_dir)
    files = st.write_checkpoint(out_dir, plan, produce, max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    logger.info("saved %s %s model (%d tensors in %s) to %s", spec.family, spec.task, len(plan), files, out_dir)
    return out_dir
