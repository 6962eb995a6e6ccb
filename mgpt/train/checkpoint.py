"""Orbax checkpoints: the latest N train states for resuming, and the best params by a metric.

Two ``CheckpointManager``s under the workdir:
- ``checkpoints/``: full train state plus loop metadata, the latest ``max_to_keep`` kept;
- ``best/``: params plus metadata of the best evaluation so far (saved only when it improves).
Saves are asynchronous; :meth:`Checkpoints.close` waits for them.

What is on disk is never trusted blindly: a state with a non-finite value is never saved; a restore
verifies what it read (it restores, and every value is finite) and, when the newest checkpoint is torn or
corrupted, warns naming it, moves it aside to ``checkpoints.bad/`` and falls back to the next newest;
``best/`` is never left ahead of the resumed state (:meth:`Checkpoints.reconcile_best`). With ``partial`` (a
:class:`mgpt.peft.checkpoint.TrainableOnly`, for ``checkpoint.trainable_only``) only the trained params are
written, with the frozen base model's identity in the metadata, and restoring fills the frozen ones back in.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mgpt.config import CheckpointConfig
from mgpt.train.errors import CheckpointError, ResumeError

log = logging.getLogger("mgpt")

LATEST_DIR = "checkpoints"
BEST_DIR = "best"


def _manager(directory: str, max_to_keep: int, async_save: bool, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=not read_only
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def all_finite(tree: Any) -> bool:
    """Whether every floating-point value of ``tree`` is finite (one reduction on the devices)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    if not leaves:
        return True
    return bool(jax.jit(lambda xs: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs])))(leaves))


def _short(error: BaseException) -> str:
    """One line of an exception (Orbax / TensorStore messages run to many lines)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


class Checkpoints:
    """Latest-N and best checkpoints of one run."""

    def __init__(self, workdir: str, cfg: CheckpointConfig, partial: Any = None):
        self.cfg, self.partial, self.workdir = cfg, partial, workdir
        self.latest = self._open(LATEST_DIR)
        self.best = self._open(BEST_DIR) if cfg.keep_best else None

    def _open(self, name: str) -> ocp.CheckpointManager:
        # best/ keeps the previous best too: if a crash leaves the newest best ahead of checkpoints/, the
        # best of the resumed trajectory is still on disk once that one is set aside.
        keep = self.cfg.max_to_keep if name == LATEST_DIR else 2
        return _manager(os.path.join(self.workdir, name), keep, self.cfg.async_save)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save the full state (asynchronously) with JSON metadata such as early-stopping counters.

        A state holding a non-finite value is refused (CheckpointError): it would poison every resume.
        """
        if step in self.latest.all_steps():
            return  # already saved at this step (e.g. at an evaluation just before a stop)
        if self.partial is not None:
            meta = self.partial.stamp(meta)
        self._save_checked(self.latest, step, "state", state, meta,
                           self.partial.pack_state if self.partial is not None else None)

    def save_best(self, step: int, params: Any, meta: dict) -> None:
        if self.best is None:
            return
        if self.partial is not None:
            meta = self.partial.stamp(meta)
        self._save_checked(self.best, step, "params", params, meta,
                           self.partial.pack if self.partial is not None else None)

    @staticmethod
    def _save_checked(manager, step: int, key: str, tree: Any, meta: dict, pack=None) -> None:
        """Save ``tree`` under ``key`` with ``meta``, refusing non-finite values and checking Orbax saved it."""
        if not all_finite(tree):
            raise CheckpointError(f"step {step}: the {key} hold a non-finite value; not saving them in "
                                  f"{manager.directory} (the checkpoints there stay finite)")
        tree = pack(tree) if pack is not None else tree
        saved = manager.save(step, args=ocp.args.Composite(**{key: ocp.args.StandardSave(tree)},
                                                           meta=ocp.args.JsonSave(meta)))
        if not saved:
            raise CheckpointError(f"step {step}: Orbax did not save the checkpoint in {manager.directory} "
                                  f"(its latest step is {manager.latest_step()})")

    def _set_aside(self, name: str, step: int, why: str) -> None:
        """Move step ``step`` of ``name`` (checkpoints / best) to ``<name>.bad/`` and reopen the manager."""
        manager = self.latest if name == LATEST_DIR else self.best
        source = os.path.join(os.fspath(manager.directory), str(step))
        target_dir = os.path.join(self.workdir, f"{name}.bad")
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(source):
            shutil.move(source, target)
        log.warning("%s step %d %s; moved it to %s", manager.directory, step, why, target)
        manager.close()
        if name == LATEST_DIR:
            self.latest = self._open(LATEST_DIR)
        else:
            self.best = self._open(BEST_DIR)

    def restore(self, target: Any, step: int | None = None, fill: Any = None) -> tuple[Any, dict]:
        """The newest intact state (or the one at ``step``), laid out like ``target`` (abstract, with shardings).

        Each candidate, newest first, must restore and be finite; when one fails the next newest is tried, and
        the failed ones are set aside with a warning once an older one restores. CheckpointError (nothing
        moved) when none restores. With ``partial``, ``fill`` (the
        params loaded at start-up) supplies the frozen params.
        """
        if step is not None:
            return self._restore_step(target, step, fill)
        failures, bad = [], []
        for candidate in sorted(self.latest.all_steps(), reverse=True):
            try:
                state, meta = self._restore_step(target, candidate, fill)
            except ResumeError:
                raise  # the checkpoint is intact but not this run's: keep it, say so
            except Exception as error:  # noqa: BLE001 -- torn files fail in Orbax, TensorStore, json, ...
                failures.append(f"step {candidate}: {_short(error)}")
                bad.append((candidate, f"could not be restored ({_short(error)})"))
                continue
            if not all_finite(state):
                failures.append(f"step {candidate}: holds non-finite values")
                bad.append((candidate, "holds non-finite values"))
                continue
            # Only now that an older one is intact are the newer ones known to be broken (and not merely
            # incompatible with this run): set them aside, so saving goes on past them.
            for step_, why in bad:
                self._set_aside(LATEST_DIR, step_, why)
            return state, meta
        raise CheckpointError(f"no intact checkpoint to resume from in {self.latest.directory} "
                              f"({'; '.join(failures) or 'none left'}); nothing was moved; use a new workdir to "
                              f"start afresh")

    def _restore_step(self, target: Any, step: int, fill: Any) -> tuple[Any, dict]:
        item = target if self.partial is None else self.partial.pack_state(target)
        restored = self.latest.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(item), meta=ocp.args.JsonRestore())
        )
        state, meta = restored["state"], restored["meta"]
        if self.partial is not None:
            try:
                self.partial.check(meta, f"{self.latest.directory} step {step}")
            except ValueError as error:  # a deliberate refusal, not a torn file: never set aside for it
                raise ResumeError(str(error)) from error
            state = dict(state, params=self.partial.unpack(state["params"], fill, target["params"]))
        return state, meta

    def restore_meta(self, step: int) -> dict:
        """Only the JSON metadata of step ``step`` (what a resume check compares before touching arrays)."""
        restored = self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def reconcile_best(self, step: int, meta: dict, params: Any = None) -> dict:
        """After resuming at ``step``: set aside best checkpoints from beyond it (a crash between the two
        saves, or another trajectory) and return ``meta`` with the best that is on disk. When the resumed
        state's best is the resumed step itself and is missing from ``best/``, ``params`` (the restored ones)
        are saved as that best again."""
        if self.best is None:
            return meta
        best_step = self.best.latest_step()
        while best_step is not None and best_step > step:
            self._set_aside(BEST_DIR, best_step, f"is ahead of the resumed step {step}")
            best_step = self.best.latest_step()
        wanted = meta.get("best_step")
        if wanted is not None and wanted in self.best.all_steps():
            return meta
        if wanted == step and params is not None:
            self.save_best(step, params, dict(meta, metric=meta.get("metric", "")))
            self.best.wait_until_finished()
            return meta
        on_disk = {}
        if best_step is not None:
            saved = self.best.restore(best_step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            on_disk = {"best_step": saved.get("best_step"), "best_value": saved.get("best_value")}
        if wanted is not None or best_step is not None:
            log.warning("the resumed state's best (step %s) is not in %s (latest step %s); keeping the one on disk",
                        wanted, self.best.directory, best_step)
        return dict(meta, best_step=on_disk.get("best_step"), best_value=on_disk.get("best_value"))

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
