"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) inserted without touching the model code.

An adapter maps a sub-layer's output ``h`` to ``h + up(act(down(h)))`` with ``down`` ``(E, m)`` and ``up``
``(m, E)``; ``up`` starts at zero, so the adapted model starts equal to the base model. Houlsby places one
after the attention output projection and one after the FFN output projection of every layer; Pfeiffer only
after the FFN. They sit on the projection's output, before the residual add (and before the dropout and
LayerNorm of post-LN encoders), through a Flax method interceptor on the projection's ``Dense``, which
finds the adapter beside that layer's kernel (:func:`mgpt.peft.method.inject`); in a scanned layer stack
the adapters carry the stack's leading layer axis and ``nn.scan`` hands each layer its own.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mgpt.config import ConfigError, PeftConfig
from mgpt.models.layers import activation_fn
from mgpt.peft import method as method_lib
from mgpt.peft import targets

PLACEMENTS = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}


def sites(base: Any, spec, placement: str) -> list[str]:
    """The dense module paths whose outputs get an adapter."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"peft.adapter_placement={placement!r}: expected one of {sorted(PLACEMENTS)}")
    found: list[str] = []
    for where in PLACEMENTS[placement]:
        found += targets.match(base, targets.default_target(spec, f"adapter_{where}"), f"adapter sites ({where})")
    return sorted(found, key=targets.natural_order)


def init(rng: jax.Array, base: Any, paths: list[str], size: int, std: float) -> dict:
    """Fresh adapters for ``paths``: ``down`` ~ N(0, std), ``up`` = 0, zero biases."""
    if size < 1:
        raise ConfigError(f"peft.adapter_size must be >= 1, got {size}")
    out = {}
    keys = targets.module_keys(rng, base, paths)
    for path in paths:
        *lead, _, width = targets.get_path(base, path)["kernel"].shape
        down = std * targets.draw(lambda key, width=width: jax.random.normal(key, (width, size)), keys[path], bool(lead))
        out[path] = {
            "adapter_down": {"kernel": down, "bias": jnp.zeros((*lead, size), jnp.float32)},
            "adapter_up": {"kernel": jnp.zeros((*lead, size, width), jnp.float32),
                           "bias": jnp.zeros((*lead, width), jnp.float32)},
        }
    return targets.nest(out)


def _by_path(adapter_tree: Any) -> dict[str, dict]:
    groups = targets.modules_of(adapter_tree)  # ".../c_proj/adapter_down" -> {"kernel", "bias"}
    found: dict[str, dict] = {}
    for path, leaves in groups.items():
        site, _, part = path.rpartition("/")
        found.setdefault(site, {})[part] = leaves
    return found


def bottleneck(h: jax.Array, p: dict, activation: str) -> jax.Array:
    """``h + up(act(down(h)))`` in ``h``'s dtype."""
    down, up = p["adapter_down"], p["adapter_up"]
    z = h @ down["kernel"].astype(h.dtype) + down["bias"].astype(h.dtype)
    z = activation_fn(activation)(z)
    return h + z @ up["kernel"].astype(h.dtype) + up["bias"].astype(h.dtype)


def interceptor(activation: str):
    """A Flax method interceptor applying the adapter injected beside a ``Dense``'s kernel to its output."""

    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        p = method_lib.dense_params(context, "adapter_down")
        return out if p is None else bottleneck(out, p, activation)

    return intercept


# --- the registered method: "adapter" -----------------------------------------------------------------


def _init(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    found = sites(base, spec, cfg.adapter_placement)
    return {"adapter": init(rng, base, found, cfg.adapter_size, cfg.init_std)}


def _apply(call: method_lib.Call) -> method_lib.Call:
    base = method_lib.inject(call.base, _by_path(call.peft["adapter"]))
    return call.replace(base=base).intercept(interceptor(call.cfg.adapter_activation))


method_lib.register_method(method_lib.PeftMethod("adapter", _init, _apply))
