"""How the pure step runs on devices: ``jax.jit`` over a mesh (default) or ``jax.pmap``.

Both engines expose the same small surface to the loop: create or restore the state, run a step
on a host batch, and hand out the params and a checkpointable view of the state.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mgpt import parallel
from mgpt.train import state as state_lib
from mgpt.train.step import PLAIN, pmap_train_step, train_step


def shape_key(batch: dict) -> str:
    """A batch's shape as the metrics name it: ``"<rows>x<tokens>"`` of its input_ids."""
    return "x".join(str(int(n)) for n in batch["input_ids"].shape)


class TraceCounter:
    """Wraps a step function ``fn(first, batch, ...)`` and counts how often JAX traces it, per batch shape
    (each trace is one compilation; with bucketed batches each shape should compile exactly once)."""

    def __init__(self, fn):
        self.fn, self.traces, self.by_shape = fn, 0, {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        self.traces += 1
        key = shape_key(args[1] if len(args) > 1 else kwargs["batch"])
        self.by_shape[key] = self.by_shape.get(key, 0) + 1
        return self.fn(*args, **kwargs)


def _in_layout(fn, layout: parallel.Layout):
    """``fn`` traced with the layout's rules and mesh active (the models' activation constraints need them)."""

    def traced(*args, **kwargs):
        with layout.tracing():
            return fn(*args, **kwargs)

    return functools.update_wrapper(traced, getattr(fn, "func", fn))  # keeps the step's name in profiles


class MeshEngine:
    """One jitted, donated program over the device mesh; layouts come from ``parallel`` (a
    :class:`~mgpt.parallel.Layout`: data parallel by default, or FSDP / tensor parallel by its rules)."""

    def __init__(self, mesh, model, task, optimizer, accumulation_steps: int = 1, layout=None, objective=PLAIN):
        self.mesh = mesh
        self.optimizer = optimizer
        self.layout = layout if layout is not None else parallel.Layout(mesh)
        self.step_fn = None
        step = functools.partial(train_step, model=model, task=task, optimizer=optimizer,
                                 accumulation_steps=accumulation_steps, objective=objective)
        self._step = TraceCounter(_in_layout(step, self.layout))

    def create_state(self, params: Any, seed: int) -> dict:
        state, self.shardings = state_lib.create_state(params, self.optimizer, seed, self.mesh, self.layout)
        self.step_fn = jax.jit(self._step, donate_argnums=0, out_shardings=(self.shardings, None))
        return state

    def restore_target(self, params: Any, seed: int) -> Any:
        return state_lib.restore_target(params, self.optimizer, seed, self.shardings)

    def from_checkpoint(self, restored: dict) -> dict:
        return restored

    def checkpoint_view(self, state: dict) -> dict:
        return state

    def params(self, state: dict) -> Any:
        return state["params"]

    def step(self, state: dict, host_batch: dict) -> tuple[dict, dict]:
        return self.step_fn(state, parallel.shard_batch(host_batch, self.mesh))

    def compilations(self) -> int:
        return self._step.traces

    def compilations_by_shape(self) -> dict[str, int]:
        return dict(self._step.by_shape)


class PmapEngine:
    """Plain data parallelism with ``jax.pmap``: the state replicated, the batch split per device."""

    def __init__(self, mesh, model, task, optimizer, accumulation_steps: int = 1, objective=PLAIN):
        if jax.process_count() > 1:
            raise ValueError("parallel.mode=pmap runs on one host; use the default mode=jit for multi-host runs")
        self.devices = list(mesh.devices.flat)
        self.optimizer = optimizer
        self._step = TraceCounter(functools.partial(pmap_train_step, model=model, task=task, optimizer=optimizer,
                                                     accumulation_steps=accumulation_steps, axis_name="data",
                                                     objective=objective))
        self.step_fn = jax.pmap(self._step, axis_name="data", donate_argnums=0, devices=self.devices)

    def create_state(self, params: Any, seed: int) -> dict:
        host = jax.device_get(jax.jit(lambda p: state_lib.init_state(p, self.optimizer, seed))(params))
        return self._replicate(host)

    def _replicate(self, tree: Any) -> Any:
        # One copy per device along a new leading axis: the layout pmap expects for its inputs.
        sharding = NamedSharding(Mesh(np.asarray(self.devices), ("devices",)), PartitionSpec("devices"))
        n = len(self.devices)
        return jax.tree_util.tree_map(
            lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))), sharding), tree)

    def restore_target(self, params: Any, seed: int) -> Any:
        sharding = jax.sharding.SingleDeviceSharding(self.devices[0])
        abstract = state_lib.abstract_state(params, self.optimizer, seed)
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)

    def from_checkpoint(self, restored: dict) -> dict:
        return self._replicate(jax.device_get(restored))

    def checkpoint_view(self, state: dict) -> dict:
        return jax.tree_util.tree_map(lambda x: x[0], state)

    def params(self, state: dict) -> Any:
        return jax.tree_util.tree_map(lambda x: x[0], state["params"])

    def step(self, state: dict, host_batch: dict) -> tuple[dict, dict]:
        n = len(self.devices)
        if host_batch["input_ids"].shape[0] % n:
            raise ValueError(f"batch of {host_batch['input_ids'].shape[0]} rows does not split over {n} devices")
        split = {k: np.reshape(v, (n, v.shape[0] // n, *v.shape[1:])) for k, v in host_batch.items()}
        state, metrics = self.step_fn(state, split)
        return state, jax.tree_util.tree_map(lambda x: x[0], metrics)

    def compilations(self) -> int:
        return self._step.traces

    def compilations_by_shape(self) -> dict[str, int]:
        return dict(self._step.by_shape)


def make_engine(mode: str, mesh, model, task, optimizer, accumulation_steps: int = 1, layout=None, objective=PLAIN):
    """The engine for ``parallel.mode``; ``layout`` (a :class:`~mgpt.parallel.Layout`) is for mode=jit;
    ``objective`` (:class:`mgpt.train.step.Objective`) is what each step's gradient is."""
    engines = {"jit": MeshEngine, "pmap": PmapEngine}
    if mode not in engines:
        raise ValueError(f"parallel.mode={mode!r}: expected one of {sorted(engines)}")
    if mode == "pmap":
        if layout is not None and layout.rules != parallel.ACTIVATION_RULES:
            raise ValueError(f"parallel.mode=pmap is plain data parallelism; sharding rules {layout.rules} "
                             "need parallel.mode=jit")
        return PmapEngine(mesh, model, task, optimizer, accumulation_steps, objective)
    return MeshEngine(mesh, model, task, optimizer, accumulation_steps, layout, objective)
