"""Hugging Face checkpoints in: a name or directory -> ``(model, params, spec, tokenizer)``.

The entry point composes one module per job: :mod:`mgpt.models.hub` (name -> local directory),
:mod:`mgpt.models.loading` (safetensors -> param tree, placed on its sharding, with a :class:`LoadReport`) and
:mod:`mgpt.models.tokenizer` (optional: weights load without one). Export is :mod:`mgpt.models.hf_export`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

import jax

from mgpt.models import gguf_read
from mgpt.models.heads import build_model
from mgpt.models.hf_export import save_pretrained
from mgpt.models.hub import resolve_checkpoint_dir
from mgpt.models.loading import LoadReport, load_params
from mgpt.models.safetensors_io import CheckpointError
from mgpt.models.spec import ModelSpec, make_spec
from mgpt.models.tokenizer import (
    NEEDED_FOR,
    find_tokenizer,
    load_tokenizer,
    missing_tokenizer_message,
    prepare_tokenizer,
)

__all__ = ["CheckpointError", "LoadReport", "load_pretrained", "load_tokenizer", "pretrained_spec", "save_pretrained"]

logger = logging.getLogger("mgpt")


def load_pretrained(
    name_or_path: str | os.PathLike,
    task: str = "causal_lm",
    num_labels: Optional[int] = None,
    dtype: str = "float32",
    dropout: Optional[float] = None,
    seed: int = 0,
    param_dtype: str = "float32",
    shardings: Any = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    remat: str = "none",
    scan_layers: bool = False,
    attention_impl: str = "",
):
    """Load a transformers checkpoint as ``(model, params, spec, tokenizer)``; tokenizer None when it has none.

    ``name_or_path``: a Hugging Face directory (or Hub id), or a llama.cpp ``.gguf`` file: architecture from its
    metadata, tensors dequantized one by one to ``param_dtype`` (:mod:`mgpt.models.gguf_read`), the tokenizer
    and chat template from the metadata; any task head goes on top as for a Hugging Face decoder.

    ``dtype`` is the computation dtype; ``param_dtype`` the stored one (float32 master weights by default,
    "bfloat16" halves the memory). Each tensor is placed on its target sharding as it is read: ``shardings`` is
    a pytree like the params (leaves ``Sharding``, or ``PartitionSpec`` with ``mesh``), a callable
    ``"backbone/.../kernel" -> Sharding`` or one ``Sharding``; without it parameters are replicated over
    ``mesh``, or put on the first device. ``spec.load_report`` says which head tensors were loaded and which
    initialised (normal(initializer_range), bias 0, seeded), and whether a tokenizer was found. ``remat``,
    ``scan_layers`` and ``attention_impl`` set how the model runs (see :func:`mgpt.models.make_spec`); with
    ``scan_layers`` the layers' params are stacked (:mod:`mgpt.models.scan`).
    """
    spec = pretrained_spec(name_or_path, task, num_labels, dtype, dropout, remat=remat, scan_layers=scan_layers,
                           attention_impl=attention_impl)
    if gguf_read.is_gguf(name_or_path):
        directory = os.fspath(name_or_path)
        source = gguf_read.GgufTensors(directory, spec)
        params, report = load_params(source, spec, seed, param_dtype, shardings, mesh)
        tokenizer = gguf_read.gguf_tokenizer(directory)
        if tokenizer is not None:
            tokenizer = prepare_tokenizer(tokenizer, directory)
    else:
        directory = resolve_checkpoint_dir(name_or_path)
        params, report = load_params(directory, spec, seed, param_dtype, shardings, mesh)
        tokenizer = find_tokenizer(directory)
    if tokenizer is None:  # weights need no tokenizer; say so now, and fail later only where one is needed
        report = dataclasses.replace(report, has_tokenizer=False, tokenizer_note=missing_tokenizer_message(directory))
        logger.warning("no tokenizer found in %s; the weights loaded, but %s", directory, NEEDED_FOR)
    spec = dataclasses.replace(spec, load_report=report)
    return build_model(spec), params, spec, tokenizer


def pretrained_spec(
    name_or_path: str | os.PathLike,
    task: str = "causal_lm",
    num_labels: Optional[int] = None,
    dtype: str = "float32",
    dropout: Optional[float] = None,
    **options,
) -> ModelSpec:
    """The :class:`ModelSpec` :func:`load_pretrained` builds for a checkpoint, without reading its weights.

    Lets a caller derive the parameters' shardings (from the model's logical axes) before loading, so each
    tensor is placed directly where it belongs. ``options``: ``remat``, ``scan_layers``, ``attention_impl``.
    """
    from transformers import AutoConfig

    if gguf_read.is_gguf(name_or_path):
        return make_spec(gguf_read.hf_config(name_or_path), task, num_labels, dtype, dropout,
                         os.fspath(name_or_path), **options)
    directory = resolve_checkpoint_dir(name_or_path)
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise CheckpointError(f"{directory}: no config.json")
    hf_config = AutoConfig.from_pretrained(directory)
    return make_spec(hf_config, task, num_labels, dtype, dropout, os.fspath(name_or_path), **options)
