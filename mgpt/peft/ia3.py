"""IA3 (Liu et al. 2022): learned per-feature scaling vectors, folded into the base kernels.

A layer scaled on its output (attention keys and values) holds ``ia3_out`` ``(out,)``:
``(x W + b) * l = x (W * l) + b * l``, so the kernel's columns and the bias are scaled. A layer scaled on
its input (the FFN's output projection, whose input is the FFN activation) holds ``ia3_in`` ``(in,)``:
``(x * l) W + b = x (l[:, None] * W) + b``, so the kernel's rows are scaled. Both start at 1 (the base
model); this is the ``peft`` library's IA3 layout (``feedforward_modules`` are the input-scaled ones).
Scanned layer stacks get scales with the same leading layer axis ``(L, in)`` / ``(L, out)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mgpt.config import ConfigError, PeftConfig
from mgpt.peft import method as method_lib
from mgpt.peft import targets


def init(base: Any, paths: list[str], feedforward: set[str]) -> dict:
    """Ones-initialised scales for ``paths``; those in ``feedforward`` scale the layer's input."""
    out = {}
    for path in paths:
        *lead, fan_in, fan_out = targets.get_path(base, path)["kernel"].shape
        if path in feedforward:
            out[path] = {"ia3_in": jnp.ones((*lead, fan_in), jnp.float32)}
        else:
            out[path] = {"ia3_out": jnp.ones((*lead, fan_out), jnp.float32)}
    return targets.nest(out)


def _scaled(layer: dict, p: dict, invert: bool) -> dict:
    layer = dict(layer)
    kernel = layer["kernel"]
    vector = (p["ia3_in"] if "ia3_in" in p else p["ia3_out"]).astype(jnp.float32)
    vector = 1.0 / vector if invert else vector
    factor = vector[..., :, None] if "ia3_in" in p else vector[..., None, :]
    layer["kernel"] = (kernel.astype(jnp.float32) * factor).astype(kernel.dtype)
    if "ia3_out" in p and layer.get("bias") is not None:
        bias = layer["bias"]
        layer["bias"] = (bias.astype(jnp.float32) * vector).astype(bias.dtype)
    return layer


def transform(base: Any, ia3_tree: Any) -> Any:
    """The base params with every targeted layer scaled (pure; also the merge)."""
    replaced = {path: _scaled(targets.get_path(base, path), p, False) for path, p in targets.modules_of(ia3_tree).items()}
    return targets.set_paths(base, replaced)


def unmerge(merged: Any, ia3_tree: Any) -> Any:
    """Undo :func:`transform` (divides by the scales; exact up to float rounding)."""
    replaced = {path: _scaled(targets.get_path(merged, path), p, True) for path, p in targets.modules_of(ia3_tree).items()}
    return targets.set_paths(merged, replaced)


# --- the registered method: "ia3" ---------------------------------------------------------------------


def _init(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    pattern = cfg.target_modules or targets.default_target(spec, "ia3")
    ff_pattern = cfg.feedforward_modules or targets.default_target(spec, "ia3_feedforward")
    paths = targets.match(base, pattern, "peft.target_modules")
    feedforward = set(targets.match(base, ff_pattern, "peft.feedforward_modules", allow_empty=True))
    if not feedforward <= set(paths):
        raise ConfigError(f"peft.feedforward_modules matches modules outside peft.target_modules: "
                          f"{sorted(feedforward - set(paths))}")
    return {"ia3": init(base, paths, feedforward)}


def _apply(call: method_lib.Call) -> method_lib.Call:
    return call.replace(base=transform(call.base, call.peft["ia3"]))


def _encode(p: dict) -> dict:
    if "ia3_in" in p:
        return {"ia3_l": np.asarray(jax.device_get(p["ia3_in"]))[None, :]}
    return {"ia3_l": np.asarray(jax.device_get(p["ia3_out"]))[:, None]}


def _decode(take, p: dict) -> dict:
    if "ia3_in" in p:
        return {"ia3_in": take("ia3_l", (1, p["ia3_in"].shape[0]))[0]}
    return {"ia3_out": take("ia3_l", (p["ia3_out"].shape[0], 1))[:, 0]}


def _format_config(cfg: PeftConfig, tree: Any, name_of) -> dict:
    feedforward = sorted(name_of(path) for path, p in targets.modules_of(tree).items() if "ia3_in" in p)
    return dict(peft_type="IA3", init_ia3_weights=True, feedforward_modules=feedforward)


def _settings(config: dict, select) -> PeftConfig:
    return PeftConfig(method="ia3", target_modules=select("target_modules"),
                      feedforward_modules=select("feedforward_modules") or "(?!)")


PEFT_FORMAT = method_lib.PeftFormat("IA3", "ia3", _encode, _decode, _format_config, _settings)
method_lib.register_method(method_lib.PeftMethod(
    "ia3", _init, _apply, merge=lambda base, peft, cfg: transform(base, peft["ia3"]),
    unmerge=lambda merged, peft, cfg: unmerge(merged, peft["ia3"]), peft_format=PEFT_FORMAT))
