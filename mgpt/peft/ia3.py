"""IA3 (Liu et al. 2022): learned per-feature scaling vectors, folded into the base kernels.

A layer scaled on its output (attention keys and values) holds ``ia3_out`` ``(out,)``:
``(x W + b) * l = x (W * l) + b * l``, so the kernel's columns and the bias are scaled. A layer scaled on
its input (the FFN's output projection, whose input is the FFN activation) holds ``ia3_in`` ``(in,)``:
``(x * l) W + b = x (l[:, None] * W) + b``, so the kernel's rows are scaled. Both start at 1 (the base
model); this is the ``peft`` library's IA3 layout (``feedforward_modules`` are the input-scaled ones).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from mgpt.peft import targets


def init(base: Any, paths: list[str], feedforward: set[str]) -> dict:
    """Ones-initialised scales for ``paths``; those in ``feedforward`` scale the layer's input."""
    out = {}
    for path in paths:
        fan_in, fan_out = targets.get_path(base, path)["kernel"].shape
        if path in feedforward:
            out[path] = {"ia3_in": jnp.ones((fan_in,), jnp.float32)}
        else:
            out[path] = {"ia3_out": jnp.ones((fan_out,), jnp.float32)}
    return targets.nest(out)


def _scaled(layer: dict, p: dict, invert: bool) -> dict:
    layer = dict(layer)
    kernel = layer["kernel"]
    if "ia3_in" in p:
        factor = p["ia3_in"].astype(jnp.float32)[:, None]
    else:
        factor = p["ia3_out"].astype(jnp.float32)[None, :]
    factor = 1.0 / factor if invert else factor
    layer["kernel"] = (kernel.astype(jnp.float32) * factor).astype(kernel.dtype)
    if "ia3_out" in p and layer.get("bias") is not None:
        bias = layer["bias"]
        layer["bias"] = (bias.astype(jnp.float32) * factor[0]).astype(bias.dtype)
    return layer


def transform(base: Any, ia3_tree: Any) -> Any:
    """The base params with every targeted layer scaled (pure; also the merge)."""
    replaced = {path: _scaled(targets.get_path(base, path), p, False) for path, p in targets.modules_of(ia3_tree).items()}
    return targets.set_paths(base, replaced)


def unmerge(merged: Any, ia3_tree: Any) -> Any:
    """Undo :func:`transform` (divides by the scales; exact up to float rounding)."""
    replaced = {path: _scaled(targets.get_path(merged, path), p, True) for path, p in targets.modules_of(ia3_tree).items()}
    return targets.set_paths(merged, replaced)
