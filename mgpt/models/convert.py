"""Convert between a Hugging Face checkpoint directory and an Orbax checkpoint of mgpt params.

An mgpt Orbax directory holds::

    params/            the param tree {"backbone", "head"}, written by orbax's StandardCheckpointer
    config.json        the transformers config (architecture, labels), so the model can be rebuilt
    mgpt_spec.json     family, task, num_labels and param dtype
    tokenizer files    when the source had them

:func:`convert` picks the direction from what the source holds (``mgpt_spec.json`` -> Hugging Face,
``config.json`` + safetensors -> Orbax) and the destination: ``DST.gguf`` writes a llama.cpp file from a Hugging
Face directory, an Orbax directory or another GGUF file (:func:`mgpt.models.gguf_export.save_gguf`); a ``.gguf``
source with a directory destination writes a Hugging Face directory. ``mgpt convert SRC DST`` calls it (a
training run's workdir goes through :mod:`mgpt.train.export`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import jax
from flax import traverse_util

from mgpt.models import gguf_read
from mgpt.models.gguf_export import save_gguf
from mgpt.models.heads import build_model, make_spec
from mgpt.models.hf import load_pretrained
from mgpt.models.hf_export import export_config, save_pretrained
from mgpt.models.loading import abstract_params, param_numpy_dtype, sharding_resolver
from mgpt.models.mappings import checkpoint_task
from mgpt.models.safetensors_io import CheckpointError
from mgpt.models.tokenizer import find_tokenizer

logger = logging.getLogger("mgpt")

SPEC_FILE = "mgpt_spec.json"
PARAMS_DIR = "params"
FORMAT = "mgpt-orbax-params"


def task_from_config(hf_config) -> Optional[str]:
    """The task a transformers config's ``architectures`` was saved for, or None (bare model)."""
    return checkpoint_task(hf_config)


def _check_destination(path: str) -> str:
    path = os.path.abspath(path)  # orbax wants absolute paths
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise CheckpointError(f"destination {path} exists and is not an empty directory")
    return path


def hf_to_orbax(src: str, dst: str, task: Optional[str] = None, num_labels: Optional[int] = None,
                param_dtype: str = "float32") -> str:
    """Hugging Face directory -> Orbax params + config.json + tokenizer + mgpt_spec.json in ``dst``."""
    import orbax.checkpoint as ocp
    from transformers import AutoConfig

    dst = _check_destination(dst)
    if task is None:
        task = task_from_config(AutoConfig.from_pretrained(src))
        if task is None:
            raise CheckpointError(f"{os.path.join(src, 'config.json')} names no task head (architectures); "
                                  "pass --task")
    _, params, spec, tokenizer = load_pretrained(src, task=task, num_labels=num_labels, param_dtype=param_dtype)
    os.makedirs(dst, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(dst, PARAMS_DIR), params)
    checkpointer.wait_until_finished()
    export_config(spec, tokenizer, dtype=param_dtype).save_pretrained(dst)
    if tokenizer is not None:  # weights convert without one
        tokenizer.save_pretrained(dst)
    meta = {"format": FORMAT, "version": 1, "family": spec.family, "task": spec.task, "num_labels": spec.num_labels,
            "param_dtype": param_dtype, "params": PARAMS_DIR}
    with open(os.path.join(dst, SPEC_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    logger.info("converted %s (%s %s) to Orbax params in %s", src, spec.family, spec.task, dst)
    return dst


def read_spec_file(src: str) -> dict:
    """The ``mgpt_spec.json`` of an Orbax directory, checked."""
    path = os.path.join(src, SPEC_FILE)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    absent = [k for k in ("format", "task", "num_labels", "param_dtype", "params") if k not in meta]
    if absent or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected format {FORMAT!r} with keys task, num_labels, param_dtype, params "
                              f"(missing {absent})")
    return meta


def load_orbax(src: str, dtype: str = "float32", shardings: Any = None, mesh=None):
    """An mgpt Orbax directory as ``(model, params, spec, tokenizer)``, like :func:`load_pretrained` (tokenizer
    None when the directory has none)."""
    import orbax.checkpoint as ocp
    from transformers import AutoConfig

    src = os.path.abspath(src)
    meta = read_spec_file(src)
    spec = make_spec(AutoConfig.from_pretrained(src), meta["task"], meta["num_labels"], dtype, name_or_path=src)
    if spec.family != meta.get("family", spec.family):
        raise CheckpointError(f"{src}: config.json is {spec.family!r} but {SPEC_FILE} says {meta['family']!r}")
    model = build_model(spec)
    param_dtype = param_numpy_dtype(meta["param_dtype"])
    sharding_of = sharding_resolver(shardings, mesh)
    target = {path: jax.ShapeDtypeStruct(shape, param_dtype, sharding=sharding_of(path))
              for path, shape in abstract_params(model).items()}
    params = ocp.StandardCheckpointer().restore(os.path.join(src, meta["params"]), traverse_util.unflatten_dict(target))
    return model, params, spec, find_tokenizer(src)


def orbax_to_hf(src: str, dst: str, max_shard_size: int | str = "5GB") -> str:
    """mgpt Orbax directory -> Hugging Face directory (config.json, safetensors, tokenizer)."""
    _, params, spec, tokenizer = load_orbax(src)
    return save_pretrained(dst, spec, params, tokenizer, max_shard_size=max_shard_size)


def to_gguf(src: str, dst: str, dtype: str = "f16") -> str:
    """A Hugging Face directory, an mgpt Orbax directory or a GGUF file -> one GGUF file (a causal LM); returns
    the direction ("hf->gguf", "orbax->gguf", "gguf->gguf")."""
    if os.path.isdir(src) and os.path.isfile(os.path.join(src, SPEC_FILE)):
        kind, (_, params, spec, tokenizer) = "orbax", load_orbax(src)
    elif gguf_read.is_gguf(src) or os.path.isfile(os.path.join(src, "config.json")):
        kind = "gguf" if gguf_read.is_gguf(src) else "hf"
        _, params, spec, tokenizer = load_pretrained(src, task="causal_lm")
    else:
        raise CheckpointError(f"{src}: not a GGUF file, a Hugging Face directory (config.json) or an mgpt Orbax "
                              f"directory ({SPEC_FILE})")
    save_gguf(dst, spec, params, tokenizer, dtype=dtype)
    return f"{kind}->gguf"


def gguf_to_hf(src: str, dst: str, max_shard_size: int | str = "5GB") -> str:
    """A GGUF file -> a Hugging Face causal-LM directory (config.json, safetensors, tokenizer files)."""
    _, params, spec, tokenizer = load_pretrained(src, task="causal_lm")
    return save_pretrained(dst, spec, params, tokenizer, max_shard_size=max_shard_size)


def convert(src: str, dst: str, task: Optional[str] = None, num_labels: Optional[int] = None,
            param_dtype: str = "float32", max_shard_size: int | str = "5GB", gguf_dtype: str = "f16") -> str:
    """Convert ``src`` to ``dst``, the direction inferred from both; returns "hf->orbax", "orbax->hf", "<src>->gguf"
    (``gguf_dtype`` f16, q8_0 or f32) or "gguf->hf"."""
    if gguf_read.is_gguf(dst):
        return to_gguf(src, dst, gguf_dtype)
    if gguf_read.is_gguf(src):
        gguf_to_hf(src, _check_destination(dst), max_shard_size)
        return "gguf->hf"
    if not os.path.isdir(src):
        raise CheckpointError(f"source {src!r} is not a directory")
    if os.path.isfile(os.path.join(src, SPEC_FILE)):
        orbax_to_hf(src, dst, max_shard_size)
        return "orbax->hf"
    if os.path.isfile(os.path.join(src, "config.json")):
        hf_to_orbax(src, dst, task, num_labels, param_dtype)
        return "hf->orbax"
    raise CheckpointError(f"{src} holds neither {SPEC_FILE} (mgpt Orbax) nor config.json (Hugging Face); "
                          f"files: {sorted(os.listdir(src))}")
