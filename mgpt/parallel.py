"""Device mesh and array layouts.

Every batch is split along its leading axis over the ``data`` mesh axis. Parameters carry logical axis
names (:mod:`mgpt.models.partitioning`); a rule set (``parallel.rules``) maps them to mesh axes:

* ``dp`` (default): parameters and optimizer state replicated (data parallelism);
* ``fsdp``: parameters and optimizer state sharded over ``data`` ("embed" -> data; a parameter without
  an "embed" dimension is sharded along its largest dimension that divides evenly);
* ``tp``: tensor parallelism, "heads"/"mlp"/"vocab" over a ``model`` mesh axis;
* combinations joined by ``_`` or ``+``, e.g. ``fsdp_tp`` on ``(("data", 4), ("model", 2))``;
* ``parallel.logical_rules``: an explicit ``((logical, mesh axis or None), ...)`` tuple instead.

Optimizer-state leaves that mirror a parameter (Adam's moments) get that parameter's sharding; the rest
(step counts) are replicated. A dimension whose size the mesh axis does not divide stays unsharded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mgpt.config import ConfigError, ParallelConfig

# Activations: the batch always goes over "data" (listed first, so it wins the axis over "embed" in FSDP).
ACTIVATION_RULES = (("batch", "data"),)
RULE_SETS: dict[str, tuple] = {
    "dp": (),
    "fsdp": (("embed", "data"),),
    "tp": (("heads", "model"), ("mlp", "model"), ("vocab", "model")),
}


def make_mesh(cfg: ParallelConfig, devices: list | None = None) -> Mesh:
    """A mesh from ``cfg.mesh`` such as ``(("data", -1),)``; -1 takes the remaining devices."""
    if devices is None:
        devices = jax.devices()
        if cfg.num_devices:
            if cfg.num_devices > len(devices):
                raise ConfigError(f"parallel.num_devices={cfg.num_devices} but only {len(devices)} devices are visible")
            devices = devices[: cfg.num_devices]
    names = tuple(name for name, _ in cfg.mesh)
    sizes = [size for _, size in cfg.mesh]
    if sizes.count(-1) > 1:
        raise ConfigError(f"parallel.mesh={cfg.mesh}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if len(devices) % known:
        raise ConfigError(f"parallel.mesh={cfg.mesh} does not divide {len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ConfigError(f"parallel.mesh={cfg.mesh} needs {int(np.prod(sizes))} devices, {len(devices)} are used")
    return Mesh(np.asarray(devices).reshape(sizes), names)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the ``data`` axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    """Shardings for every leaf of the (abstract) train state: replicated under data parallelism."""
    return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)


def layout_rules(cfg: ParallelConfig) -> tuple:
    """The ``(logical axis, mesh axis)`` rules of ``cfg.rules`` (or ``cfg.logical_rules`` when given)."""
    if cfg.logical_rules:
        return tuple((name, axis) for name, axis in cfg.logical_rules)
    rules = list(ACTIVATION_RULES)
    for name in cfg.rules.replace("+", "_").split("_"):
        if name not in RULE_SETS:
            raise ConfigError(f"parallel.rules={cfg.rules!r}: {name!r} is not a rule set; use {sorted(RULE_SETS)} "
                              "joined by '_' or '+' (e.g. fsdp_tp), or give parallel.logical_rules")
        rules += RULE_SETS[name]
    return tuple(rules)


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path(path) -> tuple[str, ...]:
    return tuple(_key_name(k) for k in path)


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """How parameters, optimizer state and activations lie on ``mesh``.

    ``rules``: ``(logical axis, mesh axis)`` pairs, in priority order; ``logical``: the model's
    ``param path -> (logical names, shape)`` (:func:`mgpt.models.partitioning.logical_axes`). A parameter
    is found by its path, or by a path it ends with (PEFT nests the model's params under ``"base"``);
    unknown parameters have no names (replicated, or sharded by FSDP's largest-dimension fallback).
    """

    mesh: Mesh
    rules: tuple = ACTIVATION_RULES
    logical: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        absent = sorted({axis for _, axis in self.rules if axis is not None} - set(self.mesh.shape))
        if absent:
            raise ConfigError(f"sharding rules {self.rules} use mesh axes {absent} that the mesh "
                              f"{dict(self.mesh.shape)} lacks; e.g. tp needs parallel.mesh=(('data', 4), ('model', 2))")

    @property
    def fsdp(self) -> bool:
        """Parameters are sharded over ``data`` (some parameter axis maps to it)."""
        return any(axis == "data" for name, axis in self.rules if name not in ("batch", "length"))

    def _names(self, path: tuple, shape: tuple) -> tuple:
        for start in range(len(path)):
            hit = self.logical.get(path[start:])
            if hit is not None and tuple(hit[1]) == tuple(shape):
                return hit[0]
        return (None,) * len(shape)

    def param_spec(self, path: tuple, shape: tuple) -> PartitionSpec:
        """The mesh ``PartitionSpec`` of one parameter."""
        import flax.linen as nn

        names = self._names(path, shape)
        axes = list(nn.logical_to_mesh_axes(names, self.rules))
        sizes = self.mesh.shape
        for i, axis in enumerate(axes):  # an uneven split would need padding: keep that dimension whole
            if axis is not None and shape[i] % math.prod(sizes[a] for a in _as_tuple(axis)):
                axes[i] = None
        data = sizes.get("data", 1)
        used = {a for axis in axes if axis is not None for a in _as_tuple(axis)}
        if self.fsdp and data > 1 and "data" not in used:
            # never the "layers" axis of scanned params: the scan reads it one layer at a time
            free = [i for i, axis in enumerate(axes)
                    if axis is None and names[i] != "layers" and shape[i] % data == 0]
            if free:
                axes[max(free, key=lambda i: shape[i])] = "data"
        return PartitionSpec(*axes)

    def param_shardings(self, params: Any) -> Any:
        """A tree like ``params`` (arrays or ``ShapeDtypeStruct``) of ``NamedSharding``."""
        return jax.tree_util.tree_map_with_path(
            lambda path, x: NamedSharding(self.mesh, self.param_spec(_path(path), tuple(x.shape))), params)

    def model_param_shardings(self) -> dict:
        """Shardings of the model's own params (the ``logical`` table's paths), e.g. for
        :func:`mgpt.models.load_pretrained`'s ``shardings`` so weights load straight onto them."""
        from flax import traverse_util

        flat = {path: NamedSharding(self.mesh, self.param_spec(path, shape))
                for path, (_, shape) in self.logical.items()}
        return traverse_util.unflatten_dict(flat)

    def state_shardings(self, abstract_state: Any) -> Any:
        """Shardings of a train state ``{"step", "params", "opt_state", "rng"}`` (or any tree holding
        ``params``): params by :meth:`param_shardings`, optimizer leaves that mirror a parameter (same
        path suffix and shape) like it, everything else replicated."""
        params = abstract_state["params"]
        param_shardings = self.param_shardings(params)
        table = {}
        for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                          jax.tree_util.tree_leaves(param_shardings)):
            table[_path(path)] = (tuple(leaf.shape), sharding)
        rest = {k: v for k, v in abstract_state.items() if k != "params"}

        def place(path, leaf):
            path = _path(path)
            for start in range(len(path)):
                hit = table.get(path[start:])
                if hit is not None and hit[0] == tuple(leaf.shape):
                    return hit[1]
            return replicated(self.mesh)

        return dict(jax.tree_util.tree_map_with_path(place, rest), params=param_shardings)

    @contextlib.contextmanager
    def tracing(self):
        """Context for tracing a step: the rules and the (abstract) mesh, so the models' activation
        constraints (``nn.with_logical_constraint``) take effect."""
        import flax.linen as nn

        with nn.logical_axis_rules(self.rules), jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            yield


def _as_tuple(axis) -> tuple:
    return tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)


def make_layout(cfg: ParallelConfig, mesh: Mesh, model: Optional[Any] = None) -> Layout:
    """The layout of ``cfg.rules`` for ``model`` (a task model, or a PEFT wrapper around one)."""
    logical = {}
    if model is not None:
        from mgpt.models.partitioning import logical_axes

        logical = logical_axes(model)
    return Layout(mesh, layout_rules(cfg), logical)


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] if "data" in mesh.shape else 1


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Place a batch on the mesh, split along the batch axis.

    In a multi-host run ``batch`` holds only this process's rows (see ``Batches.batch_at``); the
    global array is assembled from every process's slice without any host reading another's rows.
    """
    size = data_parallel_size(mesh)
    processes = jax.process_count()
    for key, value in batch.items():
        if (value.shape[0] * processes) % size:
            raise ConfigError(
                f"batch axis of {key!r} has {value.shape[0] * processes} rows, not divisible by the {size} "
                "data-parallel devices; choose train.batch_size / train.eval_batch_size as a multiple of it"
            )
    sharding = batch_sharding(mesh)
    if processes == 1:
        return {key: jax.device_put(value, sharding) for key, value in batch.items()}
    return {
        key: jax.make_array_from_process_local_data(sharding, value, (value.shape[0] * processes, *value.shape[1:]))
        for key, value in batch.items()
    }


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly multi-host) arrays: replicated ones read locally, sharded ones all-gathered."""
    from jax.experimental import multihost_utils

    def fetch(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return jax.device_get(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return multihost_utils.process_allgather(x, tiled=True)

    return jax.tree_util.tree_map(fetch, tree)


def initialize_distributed(cfg: ParallelConfig) -> None:
    """Join a multi-host run through JAX's own runtime (``jax.distributed.initialize``).

    With no address given, JAX detects the cluster (Cloud TPU pods, SLURM, Open MPI, ...); the
    ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables work too.
    """
    if not cfg.distributed:
        return
    kwargs = {}
    if cfg.coordinator_address:
        kwargs["coordinator_address"] = cfg.coordinator_address
    if cfg.num_processes:
        kwargs["num_processes"] = cfg.num_processes
    if cfg.process_id >= 0:
        kwargs["process_id"] = cfg.process_id
    # CPU processes need a collectives implementation to talk to each other (GPUs and TPUs ignore it).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
