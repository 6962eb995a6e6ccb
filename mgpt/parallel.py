"""Device mesh and array layouts.

The default layout is data parallel: parameters and optimizer state replicated, every batch split
along its leading axis over the ``data`` mesh axis.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mgpt.config import ConfigError, ParallelConfig


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
