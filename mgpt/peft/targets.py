"""Which modules a PEFT method touches: per-family defaults and matching regexes against the param tree.

Modules are named by their '/'-joined path in the task model's param tree, e.g.
``backbone/h_0/attn/c_attn`` (GPT-2), ``backbone/encoder/layer_0/attention/self/query`` (BERT family) or
``backbone/layers_0/self_attn/q_proj`` (Llama family). Only dense layers (a 2-D ``kernel``) under
``backbone`` can be targets; the task head is trained whole (``peft.train_head``). With
``model.scan_layers`` a layer stack is one module path (``backbone/h/attn/c_attn``) whose kernel has a
leading layer axis ``(L, in, out)``; every method's params then carry the same leading axis.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from mgpt.config import ConfigError
from mgpt.models.family import get_family


def default_target(spec, role: str) -> str:
    """The family's default regex for a PEFT ``role`` (a key of ``Family.peft_targets``: "lora", "ia3",
    "ia3_feedforward", "adapter_attention", "adapter_ffn"): LoRA/DoRA on the attention projections, IA3's
    keys, values and FFN output (Liu et al. 2022), adapters after the attention and FFN output projections."""
    return get_family(spec.family).peft_targets[role]


def dense_modules(base_params: Any) -> dict[str, tuple[int, ...]]:
    """'/'-joined path -> kernel shape of every dense layer in the backbone: ``(in, out)``, or ``(L, in, out)``
    for a scanned layer stack."""
    flat = traverse_util.flatten_dict(base_params)
    return {
        "/".join(path[:-1]): tuple(value.shape)
        for path, value in flat.items()
        if path[0] == "backbone" and path[-1] == "kernel" and len(value.shape) in (2, 3)
    }


def match(base_params: Any, pattern: str, what: str, allow_empty: bool = False) -> list[str]:
    """Dense module paths where ``pattern`` is found (``re.search``), in a stable order; none fails clearly
    (unless ``allow_empty``)."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what}={pattern!r} is not a valid regular expression ({exc})") from None
    modules = dense_modules(base_params)
    found = sorted((p for p in modules if regex.search(p)), key=natural_order)
    if not found and not allow_empty:
        sample = ", ".join(sorted(modules, key=natural_order)[:8])
        raise ConfigError(f"{what}={pattern!r} matches no dense module; module paths look like: {sample}, ...")
    return found


def get_path(tree: Any, path: str) -> Any:
    """The subtree at a '/'-joined path."""
    for part in path.split("/"):
        tree = tree[part]
    return tree


def set_paths(tree: dict, values: dict[str, Any]) -> dict:
    """A copy of the nested dict ``tree`` with the subtrees at the given '/'-joined paths replaced."""
    out = dict(tree)
    groups: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition("/")
        if rest:
            groups.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    for head, sub in groups.items():
        out[head] = set_paths(tree[head], sub)
    return out


def nest(values: dict[str, Any]) -> dict:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in values.items()})


def modules_of(tree: Any) -> dict[str, dict]:
    """'/'-joined module path -> its leaf params, for a PEFT subtree nested like the base (e.g. LoRA's)."""
    found: dict[str, dict] = {}
    for path, value in traverse_util.flatten_dict(tree).items():
        found.setdefault("/".join(path[:-1]), {})[path[-1]] = value
    return found


def module_keys(rng: jax.Array, base_params: Any, paths: list[str]) -> dict[str, jax.Array]:
    """One random key per targeted module (``paths`` in natural order), a stack of ``L`` for a scanned layer stack.

    The ``i``-th per-layer module gets ``fold_in(rng, i)``; a scanned stack's layer ``l`` of module ``j`` (of
    ``n`` stacked ones) gets the key its per-layer twin would get, ``fold_in(rng, l * n + j)``, so both layouts
    start from the same values (when every target is in the stack, as in the GPT-2 and Llama backbones).
    """
    leads = {path: get_path(base_params, path)["kernel"].shape[:-2] for path in paths}
    stacked = [path for path in paths if leads[path]]
    keys = {path: jnp.stack([jax.random.fold_in(rng, layer * len(stacked) + j) for layer in range(leads[path][0])])
            for j, path in enumerate(stacked)}
    offset = sum(leads[path][0] for path in stacked)
    keys.update({path: jax.random.fold_in(rng, offset + k)
                 for k, path in enumerate(p for p in paths if not leads[p])})
    return keys


def draw(sample, key: jax.Array, stacked: bool) -> jax.Array:
    """``sample(key)``, or per layer (``jax.vmap``) over a stack of keys from :func:`module_keys`."""
    return jax.vmap(sample)(key) if stacked else sample(key)


def natural_order(path: str):
    # layer_10 after layer_2
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]
