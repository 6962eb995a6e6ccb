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
Flax method interceptor instead (:func:`dropout_interceptor`), which reads ``A``/``B`` (and a dropout key) put
beside the layer's kernel (:func:`mgpt.peft.method.inject`).

Scanned layer stacks (kernel ``(L, in, out)``) get ``A`` ``(L, in, r)``, ``B`` ``(L, r, out)`` and magnitudes
``(L, out)``: every formula below broadcasts over the leading axis.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mgpt.config import ConfigError, PeftConfig
from mgpt.peft import method as method_lib
from mgpt.peft import targets

_DROPOUT_KEY = "lora_dropout_key"  # injected beside the kernel while training with LoRA dropout
_DROPOUT_SALT = 0x10AA  # the adapter's dropout keys differ from the model's own


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
    keys = targets.module_keys(rng, base, paths)
    for path in paths:
        kernel = targets.get_path(base, path)["kernel"]
        *lead, fan_in, fan_out = kernel.shape
        bound = 1.0 / math.sqrt(fan_in)
        sample = lambda key, fan_in=fan_in, bound=bound: jax.random.uniform(  # noqa: E731
            key, (fan_in, rank), jnp.float32, -bound, bound)
        params = {
            "lora_a": targets.draw(sample, keys[path], bool(lead)),
            "lora_b": jnp.zeros((*lead, rank, fan_out), jnp.float32),
        }
        if dora:
            params["magnitude"] = jnp.linalg.norm(kernel.astype(jnp.float32), axis=-2)
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
    """``m / ||W + s A B||`` per output column ``(..., out)``, the norm held constant for gradients."""
    norm = jnp.linalg.norm(kernel.astype(jnp.float32) + _delta(p, s), axis=-2)
    return p["magnitude"].astype(jnp.float32) / jax.lax.stop_gradient(norm)


def adapted_kernel(kernel: jax.Array, p: dict, s: float) -> jax.Array:
    """``W'`` for one layer (LoRA, or DoRA when ``p`` has a magnitude), in the kernel's dtype."""
    w = kernel.astype(jnp.float32) + _delta(p, s)
    if "magnitude" in p:
        w = w * _dora_factor(kernel, p, s)[..., None, :]
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


def with_dropout_keys(lora_tree: Any, rng: jax.Array) -> dict[str, dict]:
    """Module path -> its LoRA params plus a dropout key (one per layer of a scanned stack)."""
    by_path = modules(lora_tree)
    out = {}
    for index, path in enumerate(sorted(by_path)):
        p = by_path[path]
        key = jax.random.fold_in(rng, index)
        lead = p["lora_a"].shape[:-2]
        if lead:  # a scanned stack: one key per layer
            key = jax.vmap(lambda i, k=key: jax.random.fold_in(k, i))(jnp.arange(lead[0]))
        out[path] = dict(p, **{_DROPOUT_KEY: key})
    return out


def dropout_interceptor(s: float, rate: float):
    """A Flax method interceptor adding ``s * dropout(x) @ A @ B`` to each ``Dense`` holding injected LoRA params.

    The layer's kernel is the *unadapted* one. DoRA's output is then
    ``m/||W + sAB|| * (x W + s dropout(x) A B) + bias``, as the ``peft`` library computes it.
    """

    def interceptor(next_fun, args, kwargs, context):
        p = method_lib.dense_params(context, _DROPOUT_KEY)
        if p is None:
            return next_fun(*args, **kwargs)
        x = args[0]
        out = next_fun(*args, **kwargs)
        keep = jax.random.bernoulli(p[_DROPOUT_KEY], 1.0 - rate, x.shape)
        dropped = jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
        low = (dropped @ p["lora_a"].astype(x.dtype)) @ p["lora_b"].astype(x.dtype) * jnp.asarray(s, x.dtype)
        if "magnitude" not in p:
            return out + low.astype(out.dtype)
        factor = _dora_factor(p["kernel"], p, s).astype(out.dtype)
        bias = p.get("bias")
        bias = jnp.zeros((), out.dtype) if bias is None else bias.astype(out.dtype)
        return (out - bias + low.astype(out.dtype)) * factor + bias

    return interceptor


# --- the registered methods: "lora" and "dora" -------------------------------------------------------


def _scale_of(peft: dict, cfg: PeftConfig) -> float:
    return scale(cfg.alpha, rank_of(peft["lora"]), cfg.use_rslora)


def _check(cfg: PeftConfig) -> None:
    if cfg.rank < 1:
        raise ConfigError(f"peft.rank must be >= 1, got {cfg.rank}")


def _init(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    pattern = cfg.target_modules or targets.default_target(spec, "lora")
    paths = targets.match(base, pattern, "peft.target_modules")
    return {"lora": init(rng, base, paths, cfg.rank, dora=cfg.method == "dora")}


def _apply(call: method_lib.Call) -> method_lib.Call:
    s = _scale_of(call.peft, call.cfg)
    if call.cfg.dropout > 0 and not call.deterministic and "dropout" in call.rngs:
        keyed = with_dropout_keys(call.peft["lora"], jax.random.fold_in(call.rngs["dropout"], _DROPOUT_SALT))
        return call.replace(base=method_lib.inject(call.base, keyed)).intercept(dropout_interceptor(s, call.cfg.dropout))
    return call.replace(base=transform(call.base, call.peft["lora"], s))


def _merge(base: Any, peft: dict, cfg: PeftConfig) -> Any:
    return transform(base, peft["lora"], _scale_of(peft, cfg))


def _unmerge(merged: Any, peft: dict, cfg: PeftConfig) -> Any:
    return unmerge(merged, peft["lora"], _scale_of(peft, cfg))


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def _encode(p: dict) -> dict:
    tensors = {"lora_A.weight": _host(p["lora_a"]).T, "lora_B.weight": _host(p["lora_b"]).T}
    if "magnitude" in p:
        tensors["lora_magnitude_vector"] = _host(p["magnitude"])
    return tensors


def _decode(take, p: dict) -> dict:
    new = {"lora_a": take("lora_A.weight", p["lora_a"].shape[::-1]).T,
           "lora_b": take("lora_B.weight", p["lora_b"].shape[::-1]).T}
    if "magnitude" in p:
        new["magnitude"] = take("lora_magnitude_vector", p["magnitude"].shape)
    return new


def _format_config(cfg: PeftConfig, tree: Any, name_of) -> dict:
    alpha = int(cfg.alpha) if float(cfg.alpha).is_integer() else cfg.alpha
    return dict(peft_type="LORA", r=rank_of(tree), lora_alpha=alpha, lora_dropout=cfg.dropout,
                use_rslora=cfg.use_rslora, use_dora=cfg.method == "dora", bias="none", init_lora_weights=True)


def _settings(config: dict, select) -> PeftConfig:
    return PeftConfig(method="dora" if config.get("use_dora") else "lora", rank=int(config.get("r", 8)),
                      alpha=float(config.get("lora_alpha", 8)), use_rslora=bool(config.get("use_rslora", False)),
                      dropout=float(config.get("lora_dropout", 0.0)), target_modules=select("target_modules"))


PEFT_FORMAT = method_lib.PeftFormat("LORA", "lora", _encode, _decode, _format_config, _settings)
for _name in ("lora", "dora"):
    method_lib.register_method(method_lib.PeftMethod(
        _name, _init, _apply, merge=_merge, unmerge=_unmerge, peft_format=PEFT_FORMAT, check=_check))
