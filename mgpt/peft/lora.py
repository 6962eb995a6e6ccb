"""LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024) as transforms of the base model's dense kernels.

Per targeted dense layer with kernel ``W`` ``(in, out)``, the PEFT params hold ``lora_a`` ``(in, r)`` and
``lora_b`` ``(r, out)`` (zeros at first, so training starts from the base model), and for DoRA a
``magnitude`` ``(out,)`` initialised to the column norms of ``W``::

    LoRA:  W' = W + s * A @ B                        s = alpha / r   (alpha / sqrt(r) with use_rslora)
    DoRA:  W' = m * V / ||V||   with V = W + s * A @ B, norms per output column

The norm ``||V||`` is treated as a constant for gradients, as in the DoRA paper (section 4.3) and the
``peft`` library; the forward value is unchanged. Merging writes ``W'`` into the base params, so the merged
model computes exactly what the unmerged one does. LoRA dropout (on the low-rank path's input) cannot be
folded into a weight, so while training with ``dropout > 0`` the update is added to the layer's output by a
Flax method interceptor instead (:func:`dropout_interceptor`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from mgpt.peft import targets


def scale(alpha: float, rank: int, use_rslora: bool) -> float:
    """The low-rank update's scale: alpha / r, or alpha / sqrt(r) (rank-stabilised LoRA)."""
    return alpha / (math.sqrt(rank) if use_rslora else rank)


def init(rng: jax.Array, base: Any, paths: list[str], rank: int, dora: bool) -> dict:
    """Fresh LoRA/DoRA params for the dense layers at ``paths``, nested like the base tree.

    ``lora_a`` ~ U(-1/sqrt(in), 1/sqrt(in)) (the bound of PyTorch's default Linear init), ``lora_b`` = 0.
    """
    if rank < 1:
        raise ValueError(f"peft.rank must be >= 1, got {rank}")
    out = {}
    for index, path in enumerate(paths):
        kernel = targets.get_path(base, path)["kernel"]
        fan_in, fan_out = kernel.shape
        bound = 1.0 / math.sqrt(fan_in)
        key = jax.random.fold_in(rng, index)
        params = {
            "lora_a": jax.random.uniform(key, (fan_in, rank), jnp.float32, -bound, bound),
            "lora_b": jnp.zeros((rank, fan_out), jnp.float32),
        }
        if dora:
            params["magnitude"] = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0)
        out[path] = params
    return targets.nest(out)


modules = targets.modules_of  # '/'-joined module path -> {"lora_a", "lora_b"[, "magnitude"]}


def rank_of(lora_tree: Any) -> int:
    ranks = {p["lora_a"].shape[-1] for p in modules(lora_tree).values()}
    if len(ranks) != 1:
        raise ValueError(f"LoRA params have several ranks {sorted(ranks)}; mgpt uses one rank per model")
    return ranks.pop()


def _delta(p: dict, s: float) -> jax.Array:
    return s * (p["lora_a"].astype(jnp.float32) @ p["lora_b"].astype(jnp.float32))


def _dora_factor(kernel: jax.Array, p: dict, s: float) -> jax.Array:
    """``m / ||W + s A B||`` per output column, the norm held constant for gradients."""
    norm = jnp.linalg.norm(kernel.astype(jnp.float32) + _delta(p, s), axis=0)
    return p["magnitude"].astype(jnp.float32) / jax.lax.stop_gradient(norm)


def adapted_kernel(kernel: jax.Array, p: dict, s: float) -> jax.Array:
    """``W'`` for one layer (LoRA, or DoRA when ``p`` has a magnitude), in the kernel's dtype."""
    w = kernel.astype(jnp.float32) + _delta(p, s)
    if "magnitude" in p:
        w = w * _dora_factor(kernel, p, s)
    return w.astype(kernel.dtype)


def transform(base: Any, lora_tree: Any, s: float) -> Any:
    """The base params with every targeted kernel replaced by its adapted ``W'`` (pure; also the merge)."""
    replaced = {}
    for path, p in modules(lora_tree).items():
        layer = targets.get_path(base, path)
        replaced[path] = dict(layer, kernel=adapted_kernel(layer["kernel"], p, s))
    return targets.set_paths(base, replaced)


def unmerge(merged: Any, lora_tree: Any, s: float) -> Any:
    """Undo :func:`transform` for LoRA: ``W = W' - s A B``. DoRA cannot be undone from ``W'`` alone."""
    replaced = {}
    for path, p in modules(lora_tree).items():
        if "magnitude" in p:
            raise ValueError(
                "DoRA merge cannot be undone from the merged weights alone (the column norms of W + sAB are "
                "lost); keep the unmerged {'base', 'peft'} params to go back"
            )
        layer = targets.get_path(merged, path)
        w = layer["kernel"].astype(jnp.float32) - _delta(p, s)
        replaced[path] = dict(layer, kernel=w.astype(layer["kernel"].dtype))
    return targets.set_paths(merged, replaced)


def dropout_interceptor(base: Any, lora_tree: Any, s: float, rate: float, rng: jax.Array):
    """A Flax method interceptor adding ``s * dropout(x) @ A @ B`` to each targeted layer's output.

    Used while training with LoRA dropout; ``base`` holds the *unadapted* kernels. DoRA's output is then
    ``m/||W + sAB|| * (x W + s dropout(x) A B) + bias``, as the ``peft`` library computes it.
    """
    by_path = modules(lora_tree)
    order = {path: i for i, path in enumerate(sorted(by_path))}

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__" or not isinstance(context.module, nn.Dense):
            return next_fun(*args, **kwargs)
        path = "/".join(context.module.path)
        if path not in by_path:
            return next_fun(*args, **kwargs)
        x = args[0]
        out = next_fun(*args, **kwargs)
        p = by_path[path]
        keep = jax.random.bernoulli(jax.random.fold_in(rng, order[path]), 1.0 - rate, x.shape)
        dropped = jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
        low = (dropped @ p["lora_a"].astype(x.dtype)) @ p["lora_b"].astype(x.dtype) * jnp.asarray(s, x.dtype)
        if "magnitude" not in p:
            return out + low.astype(out.dtype)
        layer = targets.get_path(base, path)
        factor = _dora_factor(layer["kernel"], p, s).astype(out.dtype)
        bias = layer.get("bias")
        bias = jnp.zeros((), out.dtype) if bias is None else bias.astype(out.dtype)
        return (out - bias + low.astype(out.dtype)) * factor + bias

    return interceptor
