"""What fixes a run's trajectory, recorded with every checkpoint and compared on resume.

A resume that silently continues another run is worse than a crash: it reports the old model's scores,
repeats data, or scores labels it never learned. So each checkpoint's metadata holds a fingerprint in five
parts, and a resume whose fingerprint differs stops at start-up naming what differs, unless the part is in
``train.allow_resume_changes`` (an explicit opt-in for intended changes, such as more epochs):

- ``model``: the checkpoint it starts from, the architecture, the task head and PEFT settings, and a digest
  of the initial weights (so a different model with the same shapes is caught too);
- ``data``: a SHA-256 of each data file (or the TFDS name and splits) and what orders, shapes and augments
  batches;
- ``labels``: the label names in id order;
- ``batch_size``: examples per step and gradient accumulation (they move every later data position);
- ``schedule``: epochs, steps and the optimizer with its learning-rate schedule (and the robust objective and
  label smoothing, when set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mgpt import config as config_lib
from mgpt.train.errors import ResumeError

PARTS = ("model", "data", "labels", "batch_size", "schedule")
_DATA_SHAPING = ("max_length", "padding", "bucket_lengths", "group_by_length", "group_window", "pack", "stride",
                 "label_all_subwords", "validation_ratio", "test_ratio", "split_seed", "stratify")


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (a missing file: "missing")."""
    if not path or not os.path.isfile(path):
        return "missing"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(params: Any) -> str:
    """A digest of every weight: per array its shape, dtype, and sums of its values, its squares and its
    values times their (cyclic) index, reduced on the devices (cheap, and works for sharded arrays)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)

    def stats(x):
        x = jnp.ravel(x).astype(jnp.float32)
        ramp = (jnp.arange(x.size) % 997).astype(jnp.float32) / 997.0
        return jnp.stack([jnp.sum(x), jnp.sum(x * x), jnp.sum(x * ramp)])

    values = np.asarray(jax.jit(lambda xs: [stats(x) for x in xs])([x for _, x in leaves]))
    digest = hashlib.sha256()
    for (path, x), row in zip(leaves, values):
        digest.update(f"{jax.tree_util.keystr(path)}{tuple(x.shape)}{x.dtype}".encode())
        digest.update(np.array2string(row, precision=5, floatmode="maxprec").encode())  # robust to last-bit noise
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-comparable form (tuples become lists, as they come back from a JSON file)."""
    return json.loads(json.dumps(value, default=str))


def run_fingerprint(config, label_names, params: Any, data_files: dict[str, str]) -> dict:
    """The fingerprint of a run about to train from ``params`` (its initial weights) on ``data_files``."""
    data, train, model = config.data, config.train, config.model
    sources = ({split: file_digest(path) for split, path in sorted(data_files.items())} if data.format != "tfds"
               else {"tfds": data.tfds_name, "splits": dict(data.tfds_splits)})
    # Training-time augmentation, data.max_examples and the robust objective change the trajectory too; recorded
    # only when set, so checkpoints written before they existed still resume.
    augmentation = {key: getattr(data, key) for key in ("augment", "synonyms_file", "max_examples")
                    if getattr(data, key)}
    if data.augment and data.augment_probability != 1.0:
        augmentation["augment_probability"] = data.augment_probability
    objective = {}
    if config.robust != config_lib.RobustConfig():
        objective["robust"] = dataclasses.asdict(config.robust)
    if config.task.label_smoothing:
        objective["label_smoothing"] = config.task.label_smoothing
    return _plain({
        "model": {"name_or_path": model.name_or_path, "task": config.task.kind, "dtype": model.dtype,
                  "peft": dataclasses.asdict(config.peft), "weights": weights_digest(params)},
        "data": {"files": sources, "seed": train.seed, **{key: getattr(data, key) for key in _DATA_SHAPING},
                 **augmentation},
        "labels": list(label_names),
        "batch_size": {"batch_size": train.batch_size,
                       "accumulation_steps": config.optimizer.accumulation_steps},
        "schedule": {"num_epochs": train.num_epochs, "max_steps": train.max_steps,
                     "optimizer": dataclasses.asdict(config.optimizer), **objective},
    })


def differences(saved: dict, current: dict) -> dict[str, list[str]]:
    """Per part, the keys whose values differ (``"weights"``, ``"files.train"``, ...)."""
    out = {}
    for part in PARTS:
        old, new = saved.get(part), current.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out[part] = sorted(_changed_keys(old, new))
        else:
            out[part] = [part]
    return out


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _describe(part: str, keys: list[str], saved: dict, current: dict) -> str:
    if part == "labels":
        return f"labels ({len(saved.get('labels') or [])} saved: {_head(saved.get('labels'))}; now " \
               f"{len(current.get('labels') or [])}: {_head(current.get('labels'))})"
    if part == "model":
        return f"model ({', '.join(keys)}; saved {saved['model'].get('name_or_path')!r}, now " \
               f"{current['model'].get('name_or_path')!r})"
    return f"{part} ({', '.join(keys)})"


def _head(names, count: int = 4) -> str:
    names = list(names or [])
    return ", ".join(map(str, names[:count])) + (", ..." if len(names) > count else "")


def check_resume(saved: dict | None, current: dict, allowed: tuple[str, ...], where: str) -> list[str]:
    """Fail (ResumeError, one line) when ``saved`` (the checkpoint's fingerprint) differs from ``current`` in a
    part not in ``allowed``; returns the parts that differ but were allowed. ``saved`` None (a checkpoint from
    before fingerprints) is accepted."""
    if not saved:
        return []
    changed = differences(saved, current)
    allowed_parts = set(PARTS) if "all" in allowed else set(allowed)
    refused = {part: keys for part, keys in changed.items() if part not in allowed_parts}
    if not refused:
        return sorted(changed)
    what = "; ".join(_describe(part, keys, saved, current) for part, keys in refused.items())
    lead = ("this workdir holds a run of another model" if "model" in refused and "weights" in refused["model"]
            else "this workdir holds a run that differs from this one")
    raise ResumeError(f"{where}: {lead}: {what}. Expected the same run: use a new --workdir, or resume anyway with "
                      f"--set train.allow_resume_changes=[{','.join(sorted(refused))}]")
