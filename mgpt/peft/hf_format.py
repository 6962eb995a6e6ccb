"""PEFT params in the ``peft`` library's format: ``adapter_config.json`` + ``adapter_model.safetensors``.

The methods with a :class:`~mgpt.peft.method.PeftFormat` (LoRA, DoRA, IA3) say how their tensors and config
entries look; this module does the rest (module names, the head, files, checks) for all of them.

:func:`save_adapter` writes a directory that ``peft.PeftModel.from_pretrained(<transformers model>, dir)``
loads onto the matching ``transformers`` model (the one :func:`mgpt.save_pretrained` would write, or the
original checkpoint) with the same outputs; :func:`load_adapter` reads such a directory -- written by mgpt or
by ``peft`` -- back onto an mgpt model. Module names come from the family's mapping table
(:mod:`mgpt.models.mappings`), the one that loads and exports the base weights.

Tensor layout (``peft`` names, PyTorch ``(out, in)`` convention; mgpt kernels are ``(in, out)``)::

    base_model.model.<module>.lora_A.weight (r, in)      = lora_a.T
    base_model.model.<module>.lora_B.weight (out, r)     = lora_b.T
    base_model.model.<module>.lora_magnitude_vector (out,)   DoRA
    base_model.model.<module>.ia3_l (out, 1) | (1, in)   IA3 (the latter for feedforward_modules)
    base_model.model.<head tensor>                       the task head (``modules_to_save``)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Optional

import jax
import numpy as np
from flax import traverse_util

from mgpt.models import safetensors_io as st
from mgpt.models import scan as scan_lib
from mgpt.models.mappings import base_prefix, mapping_table
from mgpt.models.safetensors_io import CheckpointError
from mgpt.peft import targets
from mgpt.peft.method import format_for, get_method, method_names
from mgpt.peft.model import PeftModel, to_scanned, to_unscanned, wrap

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
TASK_TYPES = {"sequence_classification": "SEQ_CLS", "regression": "SEQ_CLS", "token_classification": "TOKEN_CLS",
              "causal_lm": "CAUSAL_LM"}


def module_names(spec) -> dict[str, tuple[str, bool]]:
    """mgpt dense module path -> (transformers module name, whether it is a GPT-2 ``Conv1D``)."""
    names = {}
    for name, entry in mapping_table(spec).items():
        if entry.path[-1] == "kernel" and name.endswith(".weight") and entry.path[0] == "backbone":
            names["/".join(entry.path[:-1])] = (base_prefix(spec.family) + name[: -len(".weight")], not entry.transpose)
    return names


def _head_tensors(spec) -> dict[str, Any]:
    """transformers head tensor name -> mapping Entry (the head is saved as ``modules_to_save``)."""
    return {name: entry for name, entry in mapping_table(spec).items() if entry.role == "head"}


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def save_adapter(out_dir: str | os.PathLike, peft_model: PeftModel, params: dict,
                 base_model_name_or_path: Optional[str] = None) -> str:
    """Write ``params["peft"]`` (of a method with a ``peft``-library format: LoRA, DoRA, IA3) and the task head."""
    spec, cfg = peft_model.spec, peft_model.cfg
    fmt = get_method(cfg.method).peft_format
    if fmt is None:
        having = ", ".join(name for name in method_names() if get_method(name).peft_format is not None)
        raise ValueError(f"save_adapter: peft.method={cfg.method!r} has no peft-library format here; {having} "
                         "do (merge or use checkpoint.trainable_only for the others)")
    if getattr(spec, "scan_layers", False):  # the format names layers one by one
        params = to_unscanned(params, spec)
    names = module_names(spec)
    tree = params["peft"][fmt.group]
    modules = targets.modules_of(tree)
    conv1d = {names[path][1] for path in modules}
    tensors: dict[str, np.ndarray] = {}
    config: dict[str, Any] = {
        "task_type": TASK_TYPES[spec.task],
        "base_model_name_or_path": base_model_name_or_path if base_model_name_or_path is not None else spec.name_or_path,
        "target_modules": sorted(names[path][0] for path in modules),
        "fan_in_fan_out": conv1d == {True},
        "inference_mode": True,
    }
    for path, p in modules.items():
        key = PREFIX + names[path][0]
        tensors.update({f"{key}.{suffix}": value for suffix, value in fmt.encode(p).items()})
    config.update(fmt.config(cfg, tree, lambda path: names[path][0]))
    # The head goes along whole (peft's modules_to_save): initialised or trained, it is not in the base model.
    flat = traverse_util.flatten_dict(params["base"])
    heads = _head_tensors(spec)
    for name, entry in heads.items():
        value = _host(flat[entry.path])
        tensors[PREFIX + name] = value.T if entry.transpose else value
    config["modules_to_save"] = sorted({name.split(".")[0] for name in heads}) or None
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    plan = [(name, np.dtype(t.dtype), t.shape) for name, t in sorted(tensors.items())]
    st.write_file(os.path.join(out_dir, WEIGHTS_FILE), plan, lambda name: tensors[name], {"format": "pt"})
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return out_dir


def _read_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}; expected a peft adapter directory")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


def _selected(spec_names: dict[str, tuple[str, bool]], wanted: Any, path: str, key: str) -> list[str]:
    """mgpt module paths whose transformers name matches peft's ``target_modules`` rule (list: exact name or
    ``.``-suffix; string: full regex match)."""
    if wanted is None:
        return []
    if isinstance(wanted, str):
        hits = [p for p, (name, _) in spec_names.items() if re.fullmatch(wanted, name)]
    else:
        hits = [p for p, (name, _) in spec_names.items() if any(name == t or name.endswith("." + t) for t in wanted)]
    if not hits and key == "target_modules":
        raise CheckpointError(f"{path}: {key}={wanted!r} matches no module of this model")
    return sorted(hits, key=targets.natural_order)


_UNSUPPORTED = {"rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None, "layers_pattern": None,
                "bias": "none", "lora_bias": False, "exclude_modules": None, "target_parameters": None,
                "trainable_token_indices": None, "layer_replication": None}


def load_adapter(directory: str | os.PathLike, model, base_params: Any, spec, dropout: Optional[float] = None,
                 train_head: bool = True) -> tuple[PeftModel, dict]:
    """A ``peft``-format LoRA/DoRA/IA3 adapter onto an mgpt model: ``(peft_model, {"base", "peft"})``.

    ``model``/``base_params``/``spec`` come from :func:`mgpt.models.load_pretrained` with the adapter's task
    (scanned layers or not); the head tensors in ``modules_to_save`` replace the model's head.
    """
    directory = os.fspath(directory)
    config = _read_config(directory)
    path = os.path.join(directory, CONFIG_FILE)
    kind = config.get("peft_type")
    fmt = format_for(kind)
    if fmt is None:
        raise CheckpointError(f"{path}: peft_type={kind!r}; mgpt reads LORA (and DoRA) and IA3 adapters")
    for key, default in _UNSUPPORTED.items():
        if config.get(key, default) not in (default, None, {}):
            raise CheckpointError(f"{path}: {key}={config[key]!r} is not supported by mgpt (expected {default!r})")
    task_type = config.get("task_type")
    if task_type is not None and task_type != TASK_TYPES[spec.task]:
        raise CheckpointError(f"{path}: task_type={task_type!r} but the model's task is {spec.task!r}")
    names = module_names(spec)

    def select(key: str) -> str:
        paths = _selected(names, config.get(key), path, key)
        return "^(" + "|".join(re.escape(p) for p in paths) + ")$" if paths else ""

    cfg = dataclasses.replace(fmt.settings(config, select), train_head=train_head)
    if dropout is not None:
        cfg = dataclasses.replace(cfg, dropout=float(dropout))
    scanned = getattr(spec, "scan_layers", False)
    if scanned:  # the format names layers one by one: fill the per-layer layout, then stack it
        base_params = scan_lib.to_unscanned(base_params, spec)
    peft_model, params = wrap(model, base_params, spec, cfg, jax.random.PRNGKey(0))
    params = _fill_from_file(directory, params, spec, names, fmt)
    return peft_model, to_scanned(params, spec) if scanned else params


def _fill_from_file(directory: str, params: dict, spec, names, fmt) -> dict:
    weights = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    header = st.read_header(weights)
    tensors = dict(st.iter_tensors(weights, sorted(header), header))
    used: set[str] = set()

    def take(name: str, shape: tuple) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(f"{weights}: missing tensor {name!r}")
        value = tensors[name]
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        used.add(name)
        return value

    group = fmt.group
    filled = {}
    for path, p in targets.modules_of(params["peft"][group]).items():
        key = PREFIX + names[path][0]
        new = fmt.decode(lambda suffix, shape, key=key: take(f"{key}.{suffix}", shape), p)
        filled[path] = {k: jax.numpy.asarray(v, np.float32) for k, v in new.items()}
    peft = dict(params["peft"], **{group: targets.set_paths(params["peft"][group], filled)})
    base = params["base"]
    flat = traverse_util.flatten_dict(base)
    head = {}
    for name, entry in _head_tensors(spec).items():
        if PREFIX + name in tensors:
            shape = flat[entry.path].shape
            value = take(PREFIX + name, shape[::-1] if entry.transpose else shape)
            head[entry.path] = jax.numpy.asarray(value.T if entry.transpose else value, flat[entry.path].dtype)
    if head:
        flat.update(head)
        base = traverse_util.unflatten_dict(flat)
    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(f"{weights}: tensors mgpt does not know where to put: {unused}")
    return {"base": base, "peft": peft}
