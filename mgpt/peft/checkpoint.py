"""Checkpoints that hold only what changes: the trained parameters, plus the frozen base model's identity.

With ``checkpoint.trainable_only`` the Orbax checkpoints keep the trainable leaves of the params (LoRA
matrices, adapters, the head, ...) and the optimizer state (which set_to_zero already keeps free of frozen
leaves). The frozen parameters come back from the base model loaded at start-up; so that a checkpoint is
never combined with another base model, its metadata records the base's identity -- where it came from,
a hash of every frozen parameter's path, shape and dtype, and CRC32 checksums of the leading values of a
few frozen tensors -- and restoring checks it, failing with what differs.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from typing import Any

import jax
import numpy as np

from mgpt import parallel
from mgpt.config import ConfigError

log = logging.getLogger("mgpt")

IDENTITY_KEY = "base_identity"
_CHECKSUM_VALUES = 4096  # leading values per checksummed tensor: enough to tell checkpoints apart, cheap
_CHECKSUM_TENSORS = 4


def _flat(tree: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in leaves]


def base_identity(params: Any, mask: Any, name_or_path: str) -> dict:
    """JSON-ready identity of the frozen parameters (``mask`` False) of ``params``."""
    frozen = [(path, leaf) for (path, leaf), (_, trained) in zip(_flat(params), _flat(mask)) if not trained]
    if not frozen:
        raise ConfigError("checkpoint.trainable_only: every parameter is trained, so there is nothing to leave out; "
                          "set peft.method or optimizer.trainable, or turn trainable_only off")
    listing = "\n".join(f"{path}:{tuple(leaf.shape)}:{np.dtype(leaf.dtype).name}" for path, leaf in frozen)
    picks = sorted({0, len(frozen) // 3, (2 * len(frozen)) // 3, len(frozen) - 1})[:_CHECKSUM_TENSORS]
    checksums = {}
    for index in picks:
        path, leaf = frozen[index]
        head = parallel.to_host(jax.jit(lambda x: x.reshape(-1)[:_CHECKSUM_VALUES])(leaf))
        checksums[path] = zlib.crc32(np.ascontiguousarray(head).tobytes()) & 0xFFFFFFFF
    return {
        "name_or_path": str(name_or_path),
        "frozen_parameters": len(frozen),
        "shapes_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "checksums": checksums,
    }


def _select(tree: Any, mask: Any) -> Any:
    """The trainable part of a nested dict (frozen leaves and emptied subtrees dropped), or None."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            sub = _select(value, mask[key])
            if sub is not None:
                out[key] = sub
        return out or None
    return tree if mask else None


def _fill(saved: Any, fill: Any, mask: Any, target: Any) -> Any:
    """The full tree: trained leaves from ``saved``, frozen ones copied from ``fill`` onto ``target``'s layout."""
    if isinstance(mask, dict):
        return {key: _fill(saved.get(key, {}) if isinstance(saved, dict) else None, fill[key], mask[key],
                           target[key] if target is not None else None) for key in mask}
    if mask:
        return saved
    sharding = getattr(target, "sharding", None)
    # A copy, never an alias: the restored state is donated to the train step, ``fill`` must survive it.
    return jax.device_put(fill, sharding, may_alias=False) if sharding is not None else jax.numpy.array(fill)


class TrainableOnly:
    """How a :class:`mgpt.train.checkpoint.Checkpoints` packs and unpacks params when only trained ones are kept."""

    def __init__(self, mask: Any, identity: dict):
        self.mask, self.identity = mask, identity

    @classmethod
    def create(cls, params: Any, mask: Any, name_or_path: str) -> "TrainableOnly":
        return cls(mask, base_identity(params, mask, name_or_path))

    def pack(self, params: Any) -> dict:
        """Only the trained leaves (works on arrays and on abstract restore targets alike)."""
        return _select(params, self.mask) or {}

    def pack_state(self, state: dict) -> dict:
        return dict(state, params=self.pack(state["params"]))

    def unpack(self, saved: Any, fill: Any, target: Any = None) -> Any:
        """Restored trained leaves with the frozen ones from ``fill`` (the base model loaded at start-up)."""
        return _fill(saved, fill, self.mask, target)

    def stamp(self, meta: dict) -> dict:
        """``meta`` with the base identity recorded."""
        return dict(meta, **{IDENTITY_KEY: self.identity})

    def check(self, meta: dict, where: str) -> None:
        """Fail, saying what differs, if the checkpoint at ``where`` was made on another base model."""
        saved = meta.get(IDENTITY_KEY)
        if saved is None:
            raise ValueError(f"{where}: this checkpoint holds all parameters (it was not saved with "
                             "checkpoint.trainable_only=true); restore it with trainable_only=false")
        ours = self.identity
        problems = []
        if saved.get("frozen_parameters") != ours["frozen_parameters"]:
            problems.append(f"{saved.get('frozen_parameters')} frozen parameters saved, {ours['frozen_parameters']} now")
        if saved.get("shapes_sha256") != ours["shapes_sha256"]:
            problems.append("the frozen parameters' paths, shapes or dtypes differ")
        if saved.get("checksums") != ours["checksums"]:
            differing = sorted(k for k in set(saved.get("checksums", {})) | set(ours["checksums"])
                               if saved.get("checksums", {}).get(k) != ours["checksums"].get(k))
            problems.append(f"the frozen values differ (checksums of {differing})")
        if problems:
            raise ValueError(
                f"{where}: the checkpoint was trained on base model {saved.get('name_or_path')!r}, which does not "
                f"match the base loaded now ({ours['name_or_path']!r}): " + "; ".join(problems))
        if saved.get("name_or_path") != ours["name_or_path"]:
            log.warning("%s: base model path differs (%r saved, %r now) but its parameters match",
                        where, saved.get("name_or_path"), ours["name_or_path"])
