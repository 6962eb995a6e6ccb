"""A Hugging Face checkpoint directory's safetensors weights into mgpt's param tree, with a :class:`LoadReport`.

Names are translated by the family's mapping table (:mod:`mgpt.models.mappings`); export
(:mod:`mgpt.models.hf_export`) reads the same table backwards. Weights are read tensor by tensor
(:mod:`mgpt.models.safetensors_io`), converted, and placed straight onto their target sharding before the next
one is read, so the host holds about one tensor at a time rather than a second copy of the model.

Pickled weights (``*.bin``, ``*.pt``) are never opened.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mgpt.models import safetensors_io as st
from mgpt.models import scan as scan_lib
from mgpt.models.heads import TaskModel, build_model
from mgpt.models.mappings import checkpoint_head_task, head_kind, ignore_reason, mapping_table, normalize_name
from mgpt.models.safetensors_io import INDEX_FILE, SINGLE_FILE, CheckpointError
from mgpt.models.spec import DTYPES, ModelSpec

logger = logging.getLogger("mgpt")

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`mgpt.models.load_pretrained` did with the checkpoint (also logged to the "mgpt" logger)."""

    directory: str
    files: tuple[str, ...]
    loaded_head: tuple[str, ...]  # checkpoint names of head tensors that were loaded
    initialized: tuple[str, ...]  # mgpt param paths ("head/score/kernel") freshly initialised
    ignored: tuple[str, ...]  # "name (reason)" for checkpoint tensors deliberately not used
    head_note: str = ""  # why the head was initialised, when it was
    has_tokenizer: bool = True  # False: the directory had no tokenizer files (weights loaded all the same)
    tokenizer_note: str = ""  # what is missing and what needs it, when there was no tokenizer

    @property
    def head_loaded(self) -> bool:
        return bool(self.loaded_head)


# ----------------------------------------------------------------------------------------------- discovery


def checkpoint_files(directory: str) -> dict[str, str]:
    """Tensor name -> safetensors file, from ``model.safetensors`` or a sharded ``model.safetensors.index.json``."""
    single = os.path.join(directory, SINGLE_FILE)
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(single):
        return {name: single for name in st.read_header(single)}
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({exc})") from exc
        files = {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
        absent = sorted({p for p in files.values() if not os.path.isfile(p)})
        if absent:
            raise CheckpointError(f"{index} lists shard file(s) that do not exist: {absent}")
        return files
    pickles = sorted(n for n in os.listdir(directory) if n.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"{directory} has only pickled weights {pickles}; mgpt never unpickles. Convert them to safetensors, "
            "e.g. in PyTorch: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"
        )
    present = sorted(os.listdir(directory))
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found (files: {present})")


class SafetensorsTensors:
    """A Hugging Face directory's safetensors tensors (single file or sharded): the tensor source
    :func:`load_params` reads. A GGUF file offers the same interface (:class:`mgpt.models.gguf_read.GgufTensors`)."""

    def __init__(self, directory: str):
        self.where = str(directory)
        self._file_of = checkpoint_files(directory)
        self._headers = {path: st.read_header(path) for path in sorted(set(self._file_of.values()))}
        self.shapes = {name: tuple(self._headers[f][name]["shape"]) for name, f in self._file_of.items()}
        self.files = tuple(sorted({os.path.basename(p) for p in self._file_of.values()}))

    def read(self, names):
        """``(name, array)`` for each of ``names``, file by file, one tensor in memory at a time."""
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self._file_of[name], []).append(name)
        for path, file_names in by_file.items():
            for name, array in st.iter_tensors(path, file_names, self._headers[path]):
                if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
                    raise CheckpointError(f"{path}: tensor {name} has dtype {array.dtype}; expected floating point")
                yield name, array


# --------------------------------------------------------------------------------------------------- placement


def param_numpy_dtype(param_dtype: str) -> np.dtype:
    """The numpy dtype for a ``param_dtype`` name ("float32", "bfloat16", "float16")."""
    if param_dtype not in DTYPES:
        raise ValueError(f"unknown param_dtype {param_dtype!r}; expected one of {sorted(DTYPES)}")
    return np.dtype(DTYPES[param_dtype])


def sharding_resolver(shardings: Any = None, mesh: Optional[jax.sharding.Mesh] = None) -> Callable:
    """``path tuple -> Sharding`` from what :func:`load_params` accepts.

    ``shardings``: None (replicated over ``mesh`` when given, else on the first device), one ``Sharding`` for
    every parameter, a callable ``"backbone/.../kernel" -> Sharding``, or a pytree like the params whose
    leaves are ``Sharding`` (or ``PartitionSpec`` when ``mesh`` is given).
    """
    from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

    if shardings is None:
        one = NamedSharding(mesh, PartitionSpec()) if mesh is not None else SingleDeviceSharding(jax.local_devices()[0])
        return lambda path: one
    if isinstance(shardings, Sharding):
        return lambda path: shardings
    if callable(shardings) and not isinstance(shardings, dict):
        return lambda path: shardings("/".join(path))
    flat = traverse_util.flatten_dict(dict(shardings))

    def lookup(path):
        if path not in flat:
            raise ValueError(f"load_pretrained: shardings has no entry for parameter {'/'.join(path)}")
        leaf = flat[path]
        if isinstance(leaf, PartitionSpec):
            if mesh is None:
                raise ValueError(f"load_pretrained: shardings gives a PartitionSpec for {'/'.join(path)}; pass mesh")
            return NamedSharding(mesh, leaf)
        return leaf

    return lookup


def _place(array: np.ndarray, sharding) -> jax.Array:
    value = jax.device_put(array, sharding)
    value.block_until_ready()  # the host buffer can go once the copy is done; don't let reads run ahead
    return value


# ------------------------------------------------------------------------------------------ matching names


def _init_value(path: tuple[str, ...], shape, std: float, seed: int) -> jax.Array:
    """Fresh values for a parameter the checkpoint does not provide: normal(std) weights, zero bias, unit scale."""
    leaf = path[-1]
    if leaf == "bias":
        return jnp.zeros(shape, jnp.float32)
    if leaf == "scale":
        return jnp.ones(shape, jnp.float32)
    # A stable per-path key, so a parameter's initial value does not depend on which others exist.
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32("/".join(path).encode()) & 0x7FFFFFFF)
    return std * jax.random.normal(key, shape, jnp.float32)


def abstract_params(model: TaskModel) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every parameter path of the model and its shape, without allocating anything."""
    from flax.core import meta

    ids = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, attention_mask=jnp.ones_like(ids)))
    params = meta.unbox(variables["params"])  # drop the logical-partitioning boxes
    return {path: tuple(x.shape) for path, x in traverse_util.flatten_dict(params).items()}


def match_names(directory: str, names, table: dict, spec: ModelSpec) -> tuple[dict[str, str], list[str]]:
    """``(table name -> checkpoint name, ignored "name (reason)")``; unknown or missing tensors raise."""
    family, task = spec.family, spec.task
    mapped: dict[str, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for ckpt_name in sorted(names):
        name = normalize_name(ckpt_name, family)
        if name in table:
            if name in mapped:
                raise CheckpointError(f"{directory}: tensors {mapped[name]!r} and {ckpt_name!r} both map to {name!r}")
            mapped[name] = ckpt_name
            continue
        reason = ignore_reason(name, family)
        if reason is None:
            unknown.append(ckpt_name)
        else:
            ignored.append(f"{ckpt_name} ({reason})")
    if unknown:
        raise CheckpointError(
            f"{directory}: unexpected tensor(s) for a {family} {task} model: {unknown}. "
            "The checkpoint does not match mgpt's mapping table (wrong model_type in config.json, or a modified model)."
        )
    absent = [n for n, e in table.items() if e.role == "backbone" and n not in mapped]
    if absent:
        # Name them as this checkpoint spells its backbone tensors (with or without the base-model prefix).
        prefix = next((c[: len(c) - len(n)] for n, c in mapped.items() if table[n].role != "head" and c.endswith(n)),
                      "")
        raise CheckpointError(f"{directory}: missing backbone tensor(s): {[prefix + n for n in absent]}")
    return mapped, ignored


def head_problem(spec: ModelSpec, head_names: list[str], mapped: dict[str, str], shapes: dict[str, tuple],
                 fits: Callable[[str], bool]) -> str:
    """Why the checkpoint's head cannot be loaded for this task ("" when it can): absent, partial, another
    task's head, or shapes that do not fit ``num_labels``."""
    present = [n for n in head_names if n in mapped]
    ckpt_task = checkpoint_head_task(spec.hf_config)
    if not present:
        return "checkpoint has no head for this task"
    if len(present) < len(head_names):
        return f"checkpoint head is incomplete (has {present}, needs {head_names})"
    if ckpt_task not in (None, head_kind(spec.task)):
        return f"checkpoint head belongs to {spec.hf_config.architectures}, not to {spec.task}"
    if not all(fits(n) for n in head_names):
        got = {mapped[n]: shapes[mapped[n]] for n in head_names}
        return f"checkpoint head shapes {got} do not fit num_labels={spec.num_labels}"
    return ""


# --------------------------------------------------------------------------------------------------- loading


def load_params(
    directory,
    spec: ModelSpec,
    seed: int = 0,
    param_dtype: str = "float32",
    shardings: Any = None,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> tuple[dict, LoadReport]:
    """Read the checkpoint into mgpt's param tree, checking every name and shape; see the module docstring.

    ``directory``: a Hugging Face directory, or a tensor source like :class:`SafetensorsTensors` (a GGUF file's
    :class:`mgpt.models.gguf_read.GgufTensors`).

    For a ``scan_layers`` spec the layers are read one by one as usual, then stacked (briefly holding both
    copies of the layers) and placed on ``shardings``, which then describe the scanned layout.
    """
    if spec.scan_layers:
        per_layer = scan_lib.unstack_shardings(shardings, spec)
        params, report = load_params(directory, dataclasses.replace(spec, scan_layers=False), seed, param_dtype,
                                     per_layer, mesh)
        sharding_of = sharding_resolver(shardings, mesh)
        stacked = traverse_util.flatten_dict(scan_lib.to_scanned(params, spec))
        placed = {path: _place(value, sharding_of(path)) for path, value in stacked.items()}
        return traverse_util.unflatten_dict(placed), report
    source = directory if hasattr(directory, "read") else SafetensorsTensors(directory)
    directory = source.where
    shapes = source.shapes
    table = mapping_table(spec)
    target_dtype = param_numpy_dtype(param_dtype)
    sharding_of = sharding_resolver(shardings, mesh)
    mapped, ignored = match_names(directory, shapes, table, spec)
    expected = abstract_params(build_model(spec))

    def fits(name: str) -> bool:
        entry = table[name]
        shape = shapes[mapped[name]]
        return (shape[::-1] if entry.transpose else shape) == expected[entry.path]

    # Backbone and pooler shapes must match exactly.
    for name, entry in table.items():
        if entry.role != "head" and name in mapped and not fits(name):
            raise CheckpointError(
                f"{directory}: tensor {mapped[name]!r} has shape {shapes[mapped[name]]}"
                f"{' (transposed on load)' if entry.transpose else ''}; mgpt parameter {'/'.join(entry.path)} "
                f"of this config needs {expected[entry.path]}"
            )

    # The head loads only when the checkpoint has this task's complete head with matching shapes.
    head_names = [n for n, e in table.items() if e.role == "head"]
    head_note = head_problem(spec, head_names, mapped, shapes, fits) if head_names else ""
    if head_note:
        for n in head_names:
            if n in mapped:
                ignored.append(f"{mapped.pop(n)} (head not loaded: {head_note})")

    loaded_head = tuple(sorted(mapped[n] for n in head_names if n in mapped))
    flat: dict[tuple[str, ...], jax.Array] = {}
    path_of = {ckpt: table[name] for name, ckpt in mapped.items()}
    for ckpt_name, array in source.read(list(mapped.values())):
        entry = path_of[ckpt_name]
        array = array.astype(target_dtype, copy=False)
        flat[entry.path] = _place(array.T if entry.transpose else array, sharding_of(entry.path))
        del array  # this tensor's host copy goes before the next is read
    initialized = []
    for path, shape in expected.items():
        if path not in flat:
            if path[0] != "head" and path != ("backbone", "pooler", "dense", path[-1]):
                raise CheckpointError(f"internal: mgpt parameter {'/'.join(path)} has no checkpoint tensor")
            value = np.asarray(_init_value(path, shape, spec.arch.initializer_range, seed)).astype(target_dtype)
            flat[path] = _place(value, sharding_of(path))
            initialized.append("/".join(path))

    report = LoadReport(
        directory=str(directory),
        files=source.files,
        loaded_head=loaded_head,
        initialized=tuple(sorted(initialized)),
        ignored=tuple(ignored),
        head_note=head_note,
    )
    log_report(report, spec)
    return traverse_util.unflatten_dict(flat), report


def log_report(report: LoadReport, spec: ModelSpec) -> None:
    """The report's head, initialised and ignored parts as INFO lines on the "mgpt" logger."""
    where = f"{report.directory} ({spec.family}, {spec.task})"
    if report.loaded_head:
        logger.info("%s: head tensors loaded from the checkpoint: %s", where, list(report.loaded_head))
    if report.initialized:
        note = f" ({report.head_note})" if report.head_note else ""
        logger.info("%s: parameters initialised (not loaded)%s: %s", where, note, list(report.initialized))
    if report.ignored:
        logger.info("%s: checkpoint tensors ignored: %s", where, list(report.ignored))
