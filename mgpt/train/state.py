"""The train state: a plain pytree ``{"step", "params", "opt_state", "rng"}``.

It is built abstractly first (``jax.eval_shape``), its shardings derived from that abstract tree,
then created already sharded; the same abstract tree is Orbax's restore target.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mgpt import parallel


def init_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> dict:
    """A fresh state around ``params`` (pure; meant to run under ``jax.jit``)."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": optimizer.init(params),
        "rng": jax.random.PRNGKey(seed),
    }


def abstract_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> Any:
    """Shapes and dtypes of the state, without allocating it."""
    return jax.eval_shape(lambda p: init_state(p, optimizer, seed), params)


def create_state(params: Any, optimizer: optax.GradientTransformation, seed: int, mesh: Mesh) -> tuple[dict, Any]:
    """The state created directly with its shardings; returns ``(state, shardings)``."""
    abstract = abstract_state(params, optimizer, seed)
    shardings = parallel.state_shardings(abstract, mesh)
    create = jax.jit(lambda p: init_state(p, optimizer, seed), out_shardings=shardings)
    return create(params), shardings


def restore_target(params: Any, optimizer: optax.GradientTransformation, seed: int, shardings: Any) -> Any:
    """The abstract state with shardings attached, as Orbax's restore target."""
    abstract = abstract_state(params, optimizer, seed)
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), abstract, shardings
    )
