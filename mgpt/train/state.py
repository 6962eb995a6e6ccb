"""The train state: a plain pytree ``{"step", "params", "opt_state", "rng"}``.

It is built abstractly first (``jax.eval_shape``), its shardings derived from that abstract tree,
then created already sharded; the same abstract tree is Orbax's restore target.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
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


def create_state(params: Any, optimizer: optax.GradientTransformation, seed: int, mesh: Mesh,
                 layout: Optional[parallel.Layout] = None) -> tuple[dict, Any]:
    """The state created directly with its shardings; returns ``(state, shardings)``.

    ``layout`` (:class:`mgpt.parallel.Layout`) shards params and optimizer state; without it everything
    is replicated over ``mesh``. The optimizer state is born sharded (``jit`` with ``out_shardings``).
    """
    abstract = abstract_state(params, optimizer, seed)
    shardings = parallel.state_shardings(abstract, mesh) if layout is None else layout.state_shardings(abstract)
    create = jax.jit(lambda p: init_state(p, optimizer, seed), out_shardings=shardings)
    return create(_lay_out(params, shardings["params"])), shardings


def _lay_out(params: Any, shardings: Any) -> Any:
    """Move params, wherever they were loaded, to their layout on the mesh."""

    def place(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:  # already a global (multi-host) array
            return x if x.sharding == sharding else jax.jit(lambda y: y, out_shardings=sharding)(x)
        if jax.process_count() > 1:
            # Device-to-device copies across hosts are not available on every backend: go through the
            # host, where every process holds the same loaded values.
            x = np.asarray(x)
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(place, params, shardings)


def restore_target(params: Any, optimizer: optax.GradientTransformation, seed: int, shardings: Any) -> Any:
    """The abstract state with shardings attached, as Orbax's restore target."""
    abstract = abstract_state(params, optimizer, seed)
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), abstract, shardings
    )
