"""Transformer layers rematerialised and/or scanned, and the converter between the two param layouts.

* Remat (``ModelConfig.remat``) wraps a layer in :func:`flax.linen.remat` with a policy saying which
  activations the backward pass may keep: "full" keeps none (recomputes the whole layer), "dots" keeps
  matmul outputs, "dots_no_batch" keeps only matmuls without batch dimensions (weights-like products).
* Scan (``ModelConfig.scan_layers``) runs one layer ``L`` times with :func:`flax.linen.scan`, its params
  stacked on a leading "layers" axis: one layer is compiled instead of ``L``.

Layouts: unscanned params name layers ``h_0 .. h_{L-1}`` (GPT-2) / ``layers_0 ..`` (Llama family) as the
Hugging Face names map onto; scanned params hold one tree ``h`` / ``layers`` (the family's ``scan_stack``)
whose leaves have a leading ``L`` axis. :func:`to_scanned` / :func:`to_unscanned` convert between them, so
checkpoints load and export either way.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mgpt.models.family import all_families, get_family
from mgpt.models.partitioning import LAYERS, constrain_hidden

REMAT_POLICIES: dict[str, Optional[Callable]] = {
    "none": None,
    "full": None,  # save nothing: recompute the layer in the backward pass
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def scanning_families() -> list[str]:
    """The registered families whose layers can run scanned (``Family.scan_stack`` set)."""
    return sorted(f.name for f in all_families() if f.scan_stack is not None)


def check_remat(remat: str) -> None:
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r}: expected one of {sorted(REMAT_POLICIES)}")


def layer_class(block_cls: type, remat: str, deterministic_argnum: int, scanned: bool = False) -> type:
    """``block_cls`` as is (remat "none") or wrapped in ``nn.remat`` with the named policy.

    ``deterministic_argnum`` is the position of the Python-bool ``deterministic`` argument of
    ``__call__`` counting ``self`` as 0; it must stay static.
    """
    check_remat(remat)
    if remat == "none":
        return block_cls
    # Under scan, the loop already keeps XLA from merging recomputation with the forward pass.
    return nn.remat(block_cls, policy=REMAT_POLICIES[remat], static_argnums=(deterministic_argnum,),
                    prevent_cse=not scanned)


def scan_layers(step: Callable, block: nn.Module, x: jax.Array, shared: tuple, per_layer: Any, length: int):
    """Run ``step(block, x, shared, layer_inputs) -> (x, layer_outputs)`` over ``length`` layers.

    ``block``'s params are stacked on axis 0 (named "layers" for the sharding rules); ``shared`` is
    broadcast to every layer; ``per_layer`` is a pytree whose leaves have a leading ``length`` axis (or
    None). Dropout keys differ per layer. Returns ``(x, stacked layer_outputs)``.
    """
    scanned = nn.scan(
        step,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, 0),
        length=length,
        metadata_params={nn.PARTITION_NAME: LAYERS},
    )
    return scanned(block, x, shared, per_layer)


def stack_per_layer(items: Optional[Any]) -> Optional[Any]:
    """A per-layer sequence of pytrees (prefix key/values, KV caches) as one pytree with a leading layer axis."""
    if items is None:
        return None
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *items)


def unstack_per_layer(stacked: Optional[Any], length: int) -> Optional[tuple]:
    """The inverse of :func:`stack_per_layer`."""
    if stacked is None:
        return None
    return tuple(jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i in range(length))


def layer_stack(spec) -> tuple[str, int]:
    """``(name of the scanned layer stack, number of layers)`` of ``spec``'s family; ValueError if it has none."""
    stack = get_family(spec.family).scan_stack
    if stack is None:
        raise ValueError(f"scan_layers: the {spec.family} family has no scanned layout "
                         f"(families that scan: {scanning_families()})")
    return stack, spec.arch.num_layers


def stack(tree: dict, name: str, count: int) -> dict:
    """``{name_0: t0, .., name_{n-1}: tn}`` (plus other keys) -> ``{name: stacked}`` with a leading axis."""
    keys = [f"{name}_{i}" for i in range(count)]
    missing = [k for k in keys if k not in tree]
    if missing or name in tree:
        raise ValueError(f"cannot stack layers: expected keys {keys[0]}..{keys[-1]} (missing {missing}) "
                         f"and no {name!r} key; got {sorted(tree)}")
    out = {k: v for k, v in tree.items() if k not in keys}
    out[name] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[tree[k] for k in keys])
    return out


def unstack(tree: dict, name: str, count: int) -> dict:
    """The inverse of :func:`stack`."""
    if name not in tree:
        raise ValueError(f"cannot unstack layers: no {name!r} key in {sorted(tree)}")
    out = {k: v for k, v in tree.items() if k != name}
    for i in range(count):
        out[f"{name}_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], tree[name])
    return out


def to_scanned(params: dict, spec) -> dict:
    """Task-model params with per-layer backbone entries -> the scanned layout of ``spec``'s family."""
    name, count = layer_stack(spec)
    return dict(params, backbone=stack(dict(params["backbone"]), name, count))


def to_unscanned(params: dict, spec) -> dict:
    """Scanned task-model params -> per-layer entries (the layout Hugging Face names map onto)."""
    name, count = layer_stack(spec)
    return dict(params, backbone=unstack(dict(params["backbone"]), name, count))


def run_layers(layers, x, shared: tuple, deterministic: bool, prefix_key_values=None, cache=None,
               keep_hidden: bool = False, scanned: bool = False, length: int = 0):
    """Run a backbone's layers, each called ``layer(x, *shared, deterministic, prefix_kv[, cache])``.

    ``layers`` is a list of layer modules, or (``scanned``) one layer module whose params are stacked.
    Hidden states are laid out by the sharding rules after every layer. Returns ``(x, outputs, new_cache)``:
    ``outputs`` each layer's output (when ``keep_hidden``, else empty), ``new_cache`` the per-layer updated
    caches when ``cache`` is given, else None.
    """
    def call(layer, h, common, prefix, layer_cache):
        if layer_cache is None:
            return constrain_hidden(layer(h, *common, deterministic, prefix)), None
        h, layer_cache = layer(h, *common, deterministic, prefix, layer_cache)
        return constrain_hidden(h), layer_cache

    if not scanned:
        outputs, new_cache = [], []
        for i, layer in enumerate(layers):
            prefix = prefix_key_values[i] if prefix_key_values is not None else None
            x, layer_cache = call(layer, x, shared, prefix, cache[i] if cache is not None else None)
            new_cache.append(layer_cache)
            if keep_hidden:
                outputs.append(x)
        return x, outputs, tuple(new_cache) if cache is not None else None

    def step(module, h, common, xs):
        h, layer_cache = call(module, h, common, *xs)
        return h, (h if keep_hidden else None, layer_cache)

    per_layer = (stack_per_layer(prefix_key_values), stack_per_layer(cache))
    x, (hidden, new_cache) = scan_layers(step, layers, x, shared, per_layer, length)
    outputs = list(unstack_per_layer(hidden, length)) if keep_hidden else []
    return x, outputs, unstack_per_layer(new_cache, length)


def unstack_shardings(shardings: Any, spec) -> Any:
    """Shardings given for the scanned layout, as per-layer ones (the leading layer axis dropped).

    A pytree of ``Sharding`` / ``PartitionSpec`` leaves is converted; one sharding, a callable or None
    apply to every parameter as they are.
    """
    from jax.sharding import NamedSharding, PartitionSpec, Sharding

    if not isinstance(shardings, dict):
        return shardings
    name, count = layer_stack(spec)

    def drop_layer_axis(s):
        if isinstance(s, NamedSharding):
            return NamedSharding(s.mesh, PartitionSpec(*tuple(s.spec)[1:]))
        if isinstance(s, PartitionSpec):
            return PartitionSpec(*tuple(s)[1:])
        return s  # e.g. a replicated single-device sharding fits any rank

    is_leaf = lambda x: isinstance(x, (Sharding, PartitionSpec))  # noqa: E731 -- PartitionSpec is a tuple
    backbone = dict(shardings["backbone"])
    per_layer = jax.tree_util.tree_map(drop_layer_axis, backbone.pop(name), is_leaf=is_leaf)
    backbone.update({f"{name}_{i}": per_layer for i in range(count)})
    return dict(shardings, backbone=backbone)
