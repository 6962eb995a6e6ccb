"""Orbax checkpoints: the latest N train states for resuming, and the best params by a metric.

Two ``CheckpointManager``s under the workdir:
- ``checkpoints/``: full train state plus loop metadata, the latest ``max_to_keep`` kept;
- ``best/``: params plus metadata of the best evaluation so far (saved only when it improves).
Saves are asynchronous; :meth:`Checkpoints.close` waits for them. With ``partial`` (a
:class:`mgpt.peft.checkpoint.TrainableOnly`, for ``checkpoint.trainable_only``) only the trained params are
written, with the frozen base model's identity in the metadata, and restoring fills the frozen ones back in.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from mgpt.config import CheckpointConfig

LATEST_DIR = "checkpoints"
BEST_DIR = "best"


def _manager(directory: str, max_to_keep: int, async_save: bool, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=not read_only
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class Checkpoints:
    """Latest-N and best checkpoints of one run."""

    def __init__(self, workdir: str, cfg: CheckpointConfig, partial: Any = None):
        self.cfg, self.partial = cfg, partial
        self.latest = _manager(os.path.join(workdir, LATEST_DIR), cfg.max_to_keep, cfg.async_save)
        self.best = _manager(os.path.join(workdir, BEST_DIR), 1, cfg.async_save) if cfg.keep_best else None

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save the full state (asynchronously) with JSON metadata such as early-stopping counters."""
        if step in self.latest.all_steps():
            return  # already saved at this step (e.g. at an evaluation just before a stop)
        if self.partial is not None:
            state, meta = self.partial.pack_state(state), self.partial.stamp(meta)
        self.latest.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

    def save_best(self, step: int, params: Any, meta: dict) -> None:
        if self.best is not None:
            if self.partial is not None:
                params, meta = self.partial.pack(params), self.partial.stamp(meta)
            self.best.save(
                step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta))
            )

    def restore(self, target: Any, step: int | None = None, fill: Any = None) -> tuple[Any, dict]:
        """The state at ``step`` (default: latest), laid out like ``target`` (abstract, with shardings).

        With ``partial``, ``fill`` (the params loaded at start-up) supplies the frozen params.
        """
        step = self.latest.latest_step() if step is None else step
        item = target if self.partial is None else self.partial.pack_state(target)
        restored = self.latest.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(item), meta=ocp.args.JsonRestore())
        )
        state, meta = restored["state"], restored["meta"]
        if self.partial is not None:
            self.partial.check(meta, f"{self.latest.directory} step {step}")
            state = dict(state, params=self.partial.unpack(state["params"], fill, target["params"]))
        return state, meta

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        if self.best is not None:
            self.best.close()


def restore_params(path: str, target: Any, partial: Any = None, fill: Any = None) -> tuple[Any, dict, str]:
    """Params from a run for evaluation or prediction.

    ``path`` is a workdir (its best checkpoint, else the latest state), or a ``best/`` or
    ``checkpoints/`` directory. Returns ``(params, meta, description)``. For a ``trainable_only``
    checkpoint pass ``partial`` and ``fill`` (see :meth:`Checkpoints.restore`).
    """
    full_target = target
    if partial is not None:
        target = partial.pack(target)
    path = os.path.abspath(path)
    candidates = []
    if os.path.basename(path.rstrip("/")) in (BEST_DIR, LATEST_DIR):
        candidates.append(path)
    else:
        candidates += [os.path.join(path, BEST_DIR), os.path.join(path, LATEST_DIR)]
    for directory in candidates:
        if not os.path.isdir(directory):
            continue
        manager = _manager(directory, 1, False, read_only=True)
        step = manager.latest_step()
        if step is None:
            continue
        is_best = os.path.basename(directory) == BEST_DIR
        # A best checkpoint stores params; a latest one stores the whole state. Restore only params.
        key = "params" if is_best else "state"
        item_target = target if is_best else {"params": target}
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{key: ocp.args.PyTreeRestore(item=item_target, restore_args=_restore_args(item_target),
                                               partial_restore=True)},
                meta=ocp.args.JsonRestore(),
            ),
        )
        params = restored[key] if is_best else restored[key]["params"]
        if partial is not None:
            partial.check(restored["meta"], f"{directory} step {step}")
            params = partial.unpack(params, fill, full_target)
        return params, restored["meta"], f"{directory} step {step}"
    raise FileNotFoundError(
        f"no checkpoint under {path}: expected a run's workdir, or its {BEST_DIR}/ or {LATEST_DIR}/ directory"
    )


def _restore_args(target: Any) -> Any:
    return ocp.checkpoint_utils.construct_restore_args(target)
