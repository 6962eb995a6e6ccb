"""Logical axis names on parameters and activations, so that parallelism is configuration.

Every parameter's initializer is wrapped with :func:`flax.linen.with_logical_partitioning`, which names its
dimensions with the vocabulary below; hidden states are constrained with :func:`constrain_hidden`. The
model never mentions a device mesh: :mod:`mgpt.parallel` maps the names to mesh axes with a rule set
("embed" -> "data" is FSDP, "heads"/"mlp"/"vocab" -> "model" is tensor parallelism).

Params handed around stay plain arrays. :func:`logical_axes` reads the names once, from an abstract
``model.init`` (nothing is allocated).

Vocabulary::

    vocab   token-embedding rows / LM-head columns       embed   the model width (residual stream)
    heads   attention projections' head dimension (q/k/v outputs, the output projection's input)
    mlp     the feed-forward inner width                  layers  the leading axis of scanned layers
    batch, length                                         activations only
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from flax.core import meta

HIDDEN = ("batch", "length", "embed")
EMBEDDING = ("vocab", "embed")
NORM = ("embed",)
LAYERS = "layers"


def named(init: Callable, axes: tuple) -> Callable:
    """``init`` whose output carries the logical names ``axes`` (one per dimension; None = unnamed)."""
    return nn.with_logical_partitioning(init, axes)


def dense_inits(std: float, axes: tuple) -> dict:
    """``kernel_init``/``bias_init`` keywords of an ``nn.Dense`` with an ``(in, out)`` kernel named ``axes``:
    normal(std) weights, zero bias named like the output dimension."""
    return {"kernel_init": named(nn.initializers.normal(std), axes),
            "bias_init": named(nn.initializers.zeros, axes[-1:])}


def norm_inits(scale=nn.initializers.ones, bias=nn.initializers.zeros) -> dict:
    """``scale_init``/``bias_init`` keywords of ``nn.LayerNorm`` naming both ``("embed",)``."""
    return {"scale_init": named(scale, NORM), "bias_init": named(bias, NORM)}


def constrain_hidden(x: jax.Array) -> jax.Array:
    """Lay ``(B, T, E)`` hidden states out by the active rules (a no-op outside a rules context)."""
    return nn.with_logical_constraint(x, HIDDEN)


def logical_axes(model: nn.Module, length: int = 1) -> dict[tuple[str, ...], tuple[tuple, tuple]]:
    """``param path -> (logical names, shape)`` of a task model, from an abstract ``model.init``.

    Parameters created without names (none in mgpt's own modules) get a tuple of Nones.
    """
    ids = jnp.zeros((1, length), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, attention_mask=jnp.ones_like(ids)))
    boxed = variables["params"]
    specs = nn.get_partition_spec(boxed)
    shapes = meta.unbox(boxed)
    flat_specs = traverse_util.flatten_dict(specs)
    table = {}
    for path, value in traverse_util.flatten_dict(shapes).items():
        spec = flat_specs.get(path)
        names = tuple(spec) if spec is not None else ()
        names = names + (None,) * (len(value.shape) - len(names))
        table[path] = (names, tuple(value.shape))
    return table


def unboxed(tree: Any) -> Any:
    """Strip the partitioning boxes from ``model.init`` output (the plain arrays mgpt passes around)."""
    return meta.unbox(tree)
