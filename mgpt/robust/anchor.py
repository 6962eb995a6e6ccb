"""A slow-moving copy of the weights, kept in the optimizer state (SMART's Bregman proximal point).

``anchor <- momentum * anchor + (1 - momentum) * new_params`` after every update, starting at the initial
params. Being optimizer state, it is checkpointed, sharded like the params and left as it was by a skipped
(non-finite) step, like the rest of the optimizer state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax


class AnchorState(NamedTuple):
    anchor: Any


def anchor_params(momentum: float) -> optax.GradientTransformation:
    """An Optax transformation (last in a chain) that leaves the updates alone and tracks the anchor."""
    def init(params):
        return AnchorState(anchor=jax.tree_util.tree_map(lambda p: p, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("anchor_params needs the params (optimizer.update(grads, state, params))")
        new = optax.apply_updates(params, updates)
        anchor = jax.tree_util.tree_map(lambda a, n: momentum * a + (1.0 - momentum) * n, state.anchor, new)
        return updates, AnchorState(anchor=anchor)

    return optax.GradientTransformation(init, update)


def find_anchor(opt_state) -> Any:
    """The anchor params inside an optimizer state built with :func:`anchor_params`."""
    found = optax.tree_utils.tree_get(opt_state, "anchor")
    if found is None:
        raise ValueError("this optimizer state holds no anchor params (robust.smart_bregman_weight was 0)")
    return found
