"""The safetensors file layout, read and written one tensor at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
offsets; optional ``__metadata__``) and the raw little-endian tensor bytes. The ``safetensors`` package reads
through a memory map that stays open while the file is read; every touched page of that map counts as
resident memory until the file is closed, so loading a whole model through it shows up as the model's size on
top of the parameters. Here each tensor is read with a plain positioned read into its own buffer and written
from its own buffer, so a caller that converts and releases one tensor before asking for the next holds only
that tensor on the host.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Callable, Iterable, Iterator, Optional

import ml_dtypes  # ships with jax; numpy itself has no bfloat16
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

DTYPES = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_CODES = {dtype: code for code, dtype in DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint directory, file or tensor is missing, unexpected or malformed; the message names it."""


def read_header(path: str) -> dict:
    """The JSON header of one file: ``{name: {"dtype", "shape", "data_offsets"}}`` (``__metadata__`` removed)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise CheckpointError(f"{path}: header length {length} is implausible; not a safetensors file?")
        try:
            header = json.loads(f.read(length))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: header is not valid JSON ({exc})") from exc
    header.pop("__metadata__", None)
    for name, info in header.items():
        if info.get("dtype") not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')!r}")
    return header


def _data_start(path: str) -> int:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
    return 8 + length


def iter_tensors(path: str, names: Iterable[str], header: Optional[dict] = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` for ``names`` from one file, each read into a fresh buffer (no memory map)."""
    header = read_header(path) if header is None else header
    start = _data_start(path)
    with open(path, "rb", buffering=0) as f:
        for name in names:
            info = header[name]
            begin, end = info["data_offsets"]
            array = np.empty(info["shape"], DTYPES[info["dtype"]])
            if array.nbytes != end - begin:
                raise CheckpointError(f"{path}: tensor {name} has {end - begin} bytes for shape {info['shape']}")
            view = memoryview(array.reshape(-1).view(np.uint8))
            f.seek(start + begin)
            done = 0
            while done < array.nbytes:  # a raw read may return fewer bytes than asked for
                count = f.readinto(view[done:])
                if not count:
                    raise CheckpointError(f"{path}: file ends inside tensor {name}")
                done += count
            yield name, array


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like ``"5GB"``, ``"500MB"``, ``"40KB"`` (decimal units, as transformers)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB)?\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size={size!r}: expected bytes as an int or a string like '5GB' or '500MB'")
    units = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    return int(float(match.group(1)) * units[match.group(2)])


def write_file(path: str, plan: list[tuple[str, np.dtype, tuple]], produce: Callable[[str], np.ndarray],
               metadata: Optional[dict] = None) -> None:
    """Write one file whose tensors are ``plan`` ``(name, dtype, shape)``; ``produce(name)`` gives each in turn."""
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, dtype, shape in plan:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        code = _CODES[np.dtype(dtype)]
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, dtype, shape in plan:
            array = np.ascontiguousarray(produce(name), dtype=dtype)
            if array.shape != tuple(shape):
                raise CheckpointError(f"{path}: tensor {name} came as {array.shape}, planned {tuple(shape)}")
            f.write(array.reshape(-1).view(np.uint8).data)
            del array  # released before the next tensor is produced
    os.replace(tmp, path)


def write_checkpoint(directory: str, plan: list[tuple[str, np.dtype, tuple]], produce: Callable[[str], np.ndarray],
                     max_shard_size: int | str = "5GB") -> list[str]:
    """Write ``model.safetensors``, or numbered shards plus ``model.safetensors.index.json`` when the tensors
    exceed ``max_shard_size`` (a tensor larger than the limit gets a shard of its own). Returns the file names."""
    limit = parse_size(max_shard_size)
    shards: list[list] = [[]]
    size = 0
    for item in plan:
        nbytes = int(np.prod(item[2], dtype=np.int64)) * np.dtype(item[1]).itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes
    for stale in os.listdir(directory):  # files of an earlier export would mix with this one
        if stale == INDEX_FILE or re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors", stale):
            os.remove(os.path.join(directory, stale))
    metadata = {"format": "pt"}
    if len(shards) == 1:
        write_file(os.path.join(directory, SINGLE_FILE), shards[0], produce, metadata)
        return [SINGLE_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        write_file(os.path.join(directory, name), shard, produce, metadata)
        weight_map.update({item[0]: name for item in shard})
    total = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for _, d, s in plan)
    with open(os.path.join(directory, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    return names + [INDEX_FILE]
