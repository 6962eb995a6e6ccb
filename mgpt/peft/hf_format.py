"""LoRA, DoRA and IA3 adapters in the ``peft`` library's format: ``adapter_config.json`` + ``adapter_model.safetensors``.

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

import json
import os
import re
from typing import Any, Optional

import jax
import numpy as np
from flax import traverse_util

from mgpt.config import PeftConfig
from mgpt.models import safetensors_io as st
from mgpt.models.mappings import BASE_PREFIX, mapping_table
from mgpt.models.safetensors_io import CheckpointError
from mgpt.peft import lora, targets
from mgpt.peft.model import PeftModel, wrap

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
            names["/".join(entry.path[:-1])] = (BASE_PREFIX[spec.family] + name[: -len(".weight")], not entry.transpose)
    return names


def _head_tensors(spec) -> dict[str, Any]:
    """transformers head tensor name -> mapping Entry (the head is saved as ``modules_to_save``)."""
    return {name: entry for name, entry in mapping_table(spec).items() if entry.role == "head"}


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def save_adapter(out_dir: str | os.PathLike, peft_model: PeftModel, params: dict,
                 base_model_name_or_path: Optional[str] = None) -> str:
    """Write ``params["peft"]`` (LoRA, DoRA or IA3) and the task head in the ``peft`` format."""
    spec, cfg = peft_model.spec, peft_model.cfg
    if cfg.method not in ("lora", "dora", "ia3"):
        raise ValueError(f"save_adapter: peft.method={cfg.method!r} has no peft-library format here; "
                         "lora, dora and ia3 do (merge or use checkpoint.trainable_only for the others)")
    names = module_names(spec)
    tree = params["peft"]["ia3" if cfg.method == "ia3" else "lora"]
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
        if cfg.method == "ia3":
            if "ia3_in" in p:
                tensors[f"{key}.ia3_l"] = _host(p["ia3_in"])[None, :]
            else:
                tensors[f"{key}.ia3_l"] = _host(p["ia3_out"])[:, None]
        else:
            tensors[f"{key}.lora_A.weight"] = _host(p["lora_a"]).T
            tensors[f"{key}.lora_B.weight"] = _host(p["lora_b"]).T
            if "magnitude" in p:
                tensors[f"{key}.lora_magnitude_vector"] = _host(p["magnitude"])
    if cfg.method == "ia3":
        config.update(peft_type="IA3", init_ia3_weights=True, feedforward_modules=sorted(
            names[path][0] for path, p in modules.items() if "ia3_in" in p))
    else:
        alpha = int(cfg.alpha) if float(cfg.alpha).is_integer() else cfg.alpha
        config.update(peft_type="LORA", r=lora.rank_of(tree), lora_alpha=alpha, lora_dropout=cfg.dropout,
                      use_rslora=cfg.use_rslora, use_dora=cfg.method == "dora", bias="none", init_lora_weights=True)
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

    ``model``/``base_params``/``spec`` come from :func:`mgpt.models.load_pretrained` with the adapter's task;
    the head tensors in ``modules_to_save`` replace the model's head.
    """
    directory = os.fspath(directory)
    config = _read_config(directory)
    path = os.path.join(directory, CONFIG_FILE)
    kind = config.get("peft_type")
    if kind not in ("LORA", "IA3"):
        raise CheckpointError(f"{path}: peft_type={kind!r}; mgpt reads LORA (and DoRA) and IA3 adapters")
    for key, default in _UNSUPPORTED.items():
        if config.get(key, default) not in (default, None, {}):
            raise CheckpointError(f"{path}: {key}={config[key]!r} is not supported by mgpt (expected {default!r})")
    task_type = config.get("task_type")
    if task_type is not None and task_type != TASK_TYPES[spec.task]:
        raise CheckpointError(f"{path}: task_type={task_type!r} but the model's task is {spec.task!r}")
    names = module_names(spec)
    paths = _selected(names, config.get("target_modules"), path, "target_modules")
    exact = "^(" + "|".join(re.escape(p) for p in paths) + ")$"
    if kind == "IA3":
        ff = _selected(names, config.get("feedforward_modules"), path, "feedforward_modules")
        ff_exact = "^(" + "|".join(re.escape(p) for p in ff) + ")$" if ff else "(?!)"
        cfg = PeftConfig(method="ia3", target_modules=exact, feedforward_modules=ff_exact, train_head=train_head)
    else:
        cfg = PeftConfig(method="dora" if config.get("use_dora") else "lora", rank=int(config.get("r", 8)),
                         alpha=float(config.get("lora_alpha", 8)), use_rslora=bool(config.get("use_rslora", False)),
                         dropout=float(config.get("lora_dropout", 0.0) if dropout is None else dropout),
                         target_modules=exact, train_head=train_head)
    peft_model, params = wrap(model, base_params, spec, cfg, jax.random.PRNGKey(0))
    return peft_model, _fill_from_file(directory, params, spec, names, kind)


def _fill_from_file(directory: str, params: dict, spec, names, kind: str) -> dict:
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

    group = "ia3" if kind == "IA3" else "lora"
    filled = {}
    for path, p in targets.modules_of(params["peft"][group]).items():
        key = PREFIX + names[path][0]
        new = {}
        if kind == "IA3":
            if "ia3_in" in p:
                new["ia3_in"] = take(f"{key}.ia3_l", (1, p["ia3_in"].shape[0]))[0]
            else:
                new["ia3_out"] = take(f"{key}.ia3_l", (p["ia3_out"].shape[0], 1))[:, 0]
        else:
            new["lora_a"] = take(f"{key}.lora_A.weight", p["lora_a"].shape[::-1]).T
            new["lora_b"] = take(f"{key}.lora_B.weight", p["lora_b"].shape[::-1]).T
            if "magnitude" in p:
                new["magnitude"] = take(f"{key}.lora_magnitude_vector", p["magnitude"].shape)
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
