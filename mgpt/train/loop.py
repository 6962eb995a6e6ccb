"""The training loop: the one place with side effects (logging, evaluation, checkpoints, files).

``train(config, workdir)`` builds the run from the config (:func:`mgpt.train.setup.build_run`), resumes
from the workdir's latest checkpoint when there is one, trains, evaluates, keeps the best checkpoint,
and writes the reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import jax
import numpy as np

from mgpt import config as config_lib
from mgpt import optim, parallel
from mgpt.train import checkpoint as checkpoint_lib
from mgpt.train import engine as engine_lib
from mgpt.train import compile_clock, evaluation, reporting, setup
from mgpt.train import fingerprint as fingerprint_lib
from mgpt.train import objective as objective_lib
from mgpt.train import preemption, summary
from mgpt.train.progress import progress_bar
from mgpt.train import workdir as workdir_lib
from mgpt.train.errors import Interrupted, NonFiniteError
from mgpt.train.validate import validate

log = logging.getLogger("mgpt")


def _improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train(config: config_lib.ExperimentConfig, workdir: str, stop_after: int | None = None) -> dict:
    """Train (or resume) in ``workdir``; returns the final evaluation reports by split.

    ``stop_after`` ends the run after that many steps as a pre-emption would (a checkpoint is
    written, no final evaluation); running again resumes exactly where it stopped. SIGTERM or SIGINT do
    the same at the next step boundary and raise :class:`mgpt.train.errors.Interrupted`.
    """
    started = time.perf_counter()  # the wall time of this invocation, start-up and final evaluation included
    config = validate(config)  # every config rule, before any file is opened
    parallel.initialize_distributed(config.parallel)
    enable_compilation_cache(config.train.compilation_cache_dir)
    os.makedirs(workdir, exist_ok=True)
    # One training process per workdir (WorkdirLocked at once otherwise); process 0 holds it for all hosts.
    lock = workdir_lib.lock_workdir(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        run = setup.build_run(config)
        loop = _Loop(run, workdir)
        if jax.process_index() == 0:  # written once the run has started, so it describes its checkpoints
            config_lib.save_config(config, os.path.join(workdir, "config.json"))
            evaluation.write_json(os.path.join(workdir, "cleaning.json"), run.data.cleaning)
        try:
            with preemption.StopRequest() as stop:
                finished = loop.run(stop_after, stop)
        finally:
            loop.close()
        return loop.finish(started) if finished else {}


def enable_compilation_cache(directory: str) -> None:
    """Use (and fill) JAX's persistent compilation cache in ``directory``; "" leaves it off.

    Every program is cached, however fast it compiled. JAX decides whether to use the cache at its first
    compilation, so the decision is reset here in case something compiled before.
    """
    if not directory or jax.config.jax_compilation_cache_dir == directory:
        return
    from jax.experimental.compilation_cache import compilation_cache

    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()


class _Loop:
    """The mutable parts of one training run: state, counters, writers and checkpoints."""

    def __init__(self, run: setup.Run, workdir: str):
        config, tc = run.config, run.config.train
        self.run_, self.workdir, self.tc = run, workdir, tc
        self.batches = run.batches("train", tc.batch_size, shuffle=True)
        self.steps = setup.total_steps(config, self.batches.steps_per_epoch)
        self.eval_every = tc.eval_every or self.batches.steps_per_epoch
        optimizer = optim.make_optimizer(config.optimizer, self.steps, run.params, trainable_mask=run.trainable)
        objective = objective_lib.build_objective(config, run.task)
        optimizer = objective_lib.wrap_optimizer(config, optimizer)
        for line in summary.startup_summary(run, self.batches.steps_per_epoch, self.steps):
            log.info("%s", line)
        self.engine = engine_lib.make_engine(config.parallel.mode, run.mesh, run.model, run.task, optimizer,
                                             config.optimizer.accumulation_steps, run.layout, objective)
        self.state = self.engine.create_state(run.params, tc.seed)
        self.checkpoints = None
        if config.checkpoint.enabled:
            self.checkpoints = checkpoint_lib.Checkpoints(workdir, config.checkpoint, setup.checkpoint_packing(run))
        self.meta = {"best_value": None, "best_step": None, "bad_evals": 0, "label_names": list(run.data.label_names)}
        self.start = 0
        if self.checkpoints is not None:
            self.meta["fingerprint"] = fingerprint_lib.run_fingerprint(config, run.data.label_names, run.params,
                                                                       _data_files(config))
        if self.checkpoints is not None and self.checkpoints.latest_step() is not None:
            self._resume(run)
        self.last_step = self.start
        # From step 0 an old metrics.jsonl (a crash before the first checkpoint, a reused workdir) is moved
        # aside to metrics.jsonl.<n>; resumed, the events after self.start are dropped (atomically).
        self.writer = reporting.MetricsWriter(workdir, resume_step=self.start or None, fresh=self.start == 0,
                                              enabled=jax.process_index() == 0)
        self.metric_name, self.mode = setup.best_metric_name(config, run.task)
        # What this invocation's training cost: wall seconds of the steps (evaluation and checkpoints
        # excluded), the part of it spent compiling the step, and the real and computed (padded) tokens.
        self.totals = {"train_seconds": 0.0, "compile_seconds": 0.0, "train_steps": 0, "real_tokens": 0.0,
                       "computed_tokens": 0.0, "train_examples": 0.0, "nonfinite_steps": 0}
        self.nonfinite_run = 0  # consecutive skipped (non-finite) steps, up to the last one checked
        self._running_since = None

    def _resume(self, run: setup.Run) -> None:
        """Restore the newest intact checkpoint, after checking it was written by this same run."""
        fingerprint, allowed = self.meta["fingerprint"], self.tc.allow_resume_changes
        latest = self.checkpoints.latest_step()
        where = f"{os.path.join(self.workdir, checkpoint_lib.LATEST_DIR)} step {latest}"
        try:  # compare before restoring arrays: another model's shapes would fail deep inside Orbax
            saved = self.checkpoints.restore_meta(latest)
        except Exception:  # noqa: BLE001 -- a torn checkpoint: restore() below falls back past it
            saved = None
        changed = None if saved is None else fingerprint_lib.check_resume(saved.get("fingerprint"), fingerprint,
                                                                          allowed, where)
        restored, meta = self.checkpoints.restore(self.engine.restore_target(run.params, self.tc.seed),
                                                  fill=run.params)
        self.start = int(restored["step"])
        where = f"{os.path.join(self.workdir, checkpoint_lib.LATEST_DIR)} step {self.start}"
        if changed is None or self.start != latest:  # restore() fell back to a checkpoint not yet checked
            changed = fingerprint_lib.check_resume(meta.get("fingerprint"), fingerprint, allowed, where)
        if changed:
            log.warning("resuming with changed %s, as train.allow_resume_changes allows", ", ".join(changed))
        self.state = self.engine.from_checkpoint(restored)
        self.meta = self.checkpoints.reconcile_best(self.start, dict(meta, fingerprint=fingerprint),
                                                    self._eval_params())
        log.info("resumed from %s", where)

    def _eval_params(self) -> Any:
        """The params evaluation, the best checkpoint and the final reports use: the weight average the optimizer
        keeps (optimizer.ema_decay > 0 with train.eval_ema), else the live params."""
        config = self.run_.config
        if config.optimizer.ema_decay > 0 and config.train.eval_ema:
            ema = optim.ema_params(self.state["opt_state"], self.state["params"])
            return self.engine.params({"params": ema})  # what the engine strips from params (pmap: the device axis)
        return self.engine.params(self.state)

    def run(self, stop_after: int | None, stop: preemption.StopRequest | None = None) -> bool:
        """Train to the end (True) or until ``stop_after`` / early stopping ends it (True / False)."""
        tc, checkpoint_cfg = self.tc, self.run_.config.checkpoint
        if tc.early_stopping_patience and self.meta["bad_evals"] >= tc.early_stopping_patience:
            log.info("this run already stopped early at step %d; not training further", self.start)
            return True  # a rerun of an early-stopped run only re-evaluates, as the first run ended
        progress = progress_bar(tc.progress_bar, self.steps, "train", initial=self.start)
        window = _new_window()
        pending = None  # the last step's "skipped" flag, read after the next step is dispatched (no stall)
        try:
            for step in range(self.start, self.steps):
                self._resume_clock()
                host_batch = self.batches.batch_at(step, jax.process_index(), jax.process_count())
                compiled_before = compile_clock.seconds()
                self.state, metrics = self.engine.step(self.state, host_batch)
                self.totals["compile_seconds"] += compile_clock.seconds() - compiled_before
                if pending is not None:
                    self._check_finite(*pending, window)
                pending = (step, metrics["nonfinite"])
                done = self.last_step = step + 1
                real, computed = _token_counts(host_batch)
                window["steps"] += 1
                window["tokens"] += real
                window["computed"] += computed
                self.totals["train_steps"] += 1
                self.totals["real_tokens"] += real
                self.totals["computed_tokens"] += computed
                self.totals["train_examples"] += _example_count(host_batch)
                if done % tc.log_every == 0 or done == self.steps:
                    self._check_finite(*pending, window)
                    pending = None
                    values = self._log_train(done, metrics, window, host_batch)
                    progress.set_postfix(loss=f"{values.get('loss', float('nan')):.4f}",
                                         tok_s=f"{values['tokens_per_second']:.0f}")
                    window = _new_window()
                progress.update(1)
                stop_early = False
                if done % self.eval_every == 0 or done == self.steps:
                    self._pause_clock()
                    stop_early = self._evaluate(done)
                    if not checkpoint_cfg.save_every:
                        self._save(done)
                if checkpoint_cfg.save_every and (done % checkpoint_cfg.save_every == 0 or done == self.steps):
                    self._save(done)
                if stop_early:
                    self._save(done)
                    return True
                if stop_after is not None and stop_after <= done < self.steps:
                    self._save(done)
                    log.info("stopped after step %d as asked; run again to resume", done)
                    return False
                if stop is not None and done < self.steps and stop.requested(done):
                    self._save(done)
                    if self.checkpoints is not None:
                        self.checkpoints.wait()  # the save must be on disk before the process goes
                    raise Interrupted(stop.signal_name, done, self.checkpoints is not None)
        finally:
            self._pause_clock()
            progress.close()
        return True

    def _check_finite(self, step: int, skipped, window: dict) -> None:
        """Count step ``step`` if it was skipped as non-finite; too many in a row stop the run."""
        if not float(skipped):
            self.nonfinite_run = 0
            return
        self.nonfinite_run += 1
        self.totals["nonfinite_steps"] += 1
        window["nonfinite"] += 1
        log.warning("step %d: non-finite loss or gradients; the update was skipped (%d in a row)", step + 1,
                    self.nonfinite_run)
        limit = self.tc.max_nonfinite_steps
        if self.nonfinite_run >= limit:
            raise NonFiniteError(
                f"{self.nonfinite_run} consecutive training steps (up to step {step + 1}) had a non-finite loss or "
                f"gradients and were skipped (train.max_nonfinite_steps={limit}); the last finite state is in "
                f"the latest checkpoint. Expected finite steps: lower optimizer.learning_rate, set "
                f"optimizer.max_grad_norm, or check the data")

    def _resume_clock(self) -> None:
        if self._running_since is None:
            self._running_since = time.perf_counter()

    def _pause_clock(self) -> None:
        """Stop the training clock once the steps dispatched so far have finished (dispatch is async)."""
        if self._running_since is not None:
            jax.block_until_ready(self.state)
            self.totals["train_seconds"] += time.perf_counter() - self._running_since
            self._running_since = None

    def _log_train(self, done: int, metrics: dict, window: dict, host_batch: dict) -> dict:
        metrics = parallel.to_host(metrics)  # waits for the step: the timing below is real
        elapsed = time.perf_counter() - window["start"]
        values = {
            "loss": metrics["loss"],
            "grad_norm": metrics["grad_norm"],
            "param_norm": metrics["param_norm"],
            "tokens_per_second": window["tokens"] / max(elapsed, 1e-9),  # real tokens, padding excluded
            "computed_tokens_per_second": window["computed"] / max(elapsed, 1e-9),
            "real_token_fraction": window["tokens"] / max(window["computed"], 1.0),
            # cores kept busy on average: CPU seconds of every thread of this process per wall second
            "cpu_cores_busy": (_cpu_seconds() - window["cpu"]) / max(elapsed, 1e-9),
            "seconds_per_step": elapsed / window["steps"],
            "epoch": done / self.batches.steps_per_epoch,
            # Which examples the last step saw: lets a resumed run be checked against a straight one.
            "batch_fingerprint": batch_fingerprint(host_batch),
        }
        if window["nonfinite"]:
            values["nonfinite_steps"] = window["nonfinite"]
        # A skipped last step has a non-finite loss: log what is finite (the state itself stayed finite).
        values = {key: value for key, value in values.items() if np.isfinite(value)}
        self.writer.write("train", done, values)
        return values

    def _evaluate(self, done: int) -> bool:
        """Evaluate, keep the best params; True when early stopping says stop."""
        headline = {}
        params = self._eval_params()
        for split in self.tc.eval_splits:
            if split in self.run_.data.splits:
                # <split>/<metric>, and <split>@<op>:<rate>/<metric>(_drop) with train.eval_perturbations
                _, scalars = evaluation.evaluate_with_perturbations(self.run_, params, split)
                headline.update(scalars)
        if headline:
            self.writer.write("eval", done, headline)
        value = headline.get(self.metric_name)
        if value is None:
            return False
        if _improved(value, self.meta["best_value"], self.mode):
            self.meta.update(best_value=value, best_step=done, bad_evals=0)
            if self.checkpoints is not None:
                self.checkpoints.save_best(done, params, dict(self.meta, metric=self.metric_name))
            return False
        self.meta["bad_evals"] += 1
        patience = self.tc.early_stopping_patience
        if patience and self.meta["bad_evals"] >= patience:
            log.info("early stop at step %d: %s did not improve for %d evaluations", done, self.metric_name,
                     self.meta["bad_evals"])
            return True
        return False

    def _save(self, done: int) -> None:
        self._pause_clock()
        if self.checkpoints is not None:
            self.checkpoints.save(done, self.engine.checkpoint_view(self.state), self.meta)

    def finish(self, started: float | None = None) -> dict:
        """Evaluate the best (or last) params on the final splits and write the reports and curves; ``started``
        (a ``time.perf_counter()``) gives the final metrics this invocation's ``wall_seconds``."""
        run, step = self.run_, self.last_step
        params = self._eval_params()
        final_from = "last"
        if self.checkpoints is not None and self.meta["best_step"] is not None and run.config.checkpoint.keep_best:
            params, _, _ = checkpoint_lib.restore_params(os.path.join(self.workdir, checkpoint_lib.BEST_DIR),
                                                         _params_target(params), self.checkpoints.partial, params)
            final_from = (f"best (step {self.meta['best_step']}, "
                          f"{self.metric_name}={self.meta['best_value']:.4f})")
        writer = reporting.MetricsWriter(self.workdir, fresh=False, enabled=jax.process_index() == 0)  # appends
        reports = {}
        for split in self.tc.final_eval_splits:
            if split in run.data.splits:
                report, scalars = evaluation.evaluate_with_perturbations(run, params, split)
                report["params"] = final_from
                if jax.process_index() == 0:
                    evaluation.write_report(self.workdir, split, report)
                writer.write("final", step, scalars)
                reports[split] = report
        # Guardrail: each batch shape (one per bucket length) must have compiled exactly once.
        train_shapes, eval_shapes = self.engine.compilations_by_shape(), run.eval_traces.by_shape
        compiled = {"train_step_compilations": self.engine.compilations(),
                    "eval_step_compilations": run.eval_traces.traces,
                    **{f"train_step_compilations/{k}": v for k, v in sorted(train_shapes.items())},
                    **{f"eval_step_compilations/{k}": v for k, v in sorted(eval_shapes.items())}}
        totals = dict(self.totals, epochs=self.totals["train_steps"] / self.batches.steps_per_epoch,
                      real_token_fraction=self.totals["real_tokens"] / max(self.totals["computed_tokens"], 1.0))
        if started is not None:
            totals["wall_seconds"] = time.perf_counter() - started
        writer.write("final", step, {**compiled, **totals})
        writer.close()
        if jax.process_index() == 0:
            reporting.plot_curves(self.workdir)
        return reports

    def close(self) -> None:
        self.writer.close()
        if self.checkpoints is not None:
            self.checkpoints.close()


def _data_files(config: config_lib.ExperimentConfig) -> dict[str, str]:
    """The data files a training run reads, by split."""
    data = config.data
    return {split: getattr(data, f"{split}_file") for split in ("train", "validation", "test")
            if getattr(data, f"{split}_file")}


def _new_window() -> dict:
    return {"tokens": 0.0, "computed": 0.0, "steps": 0, "nonfinite": 0, "start": time.perf_counter(),
            "cpu": _cpu_seconds()}


def _cpu_seconds() -> float:
    """CPU seconds this process has used, all threads (user + system)."""
    times = os.times()
    return times.user + times.system


def _token_counts(batch: dict) -> tuple[float, float]:
    """Real tokens (weight-1 rows' mask) and computed tokens (every row, padded length) of the global batch."""
    mask = batch["attention_mask"] != 0
    real = float(np.sum(mask * batch["example_weight"][:, None]))
    return jax.process_count() * real, jax.process_count() * float(mask.size)


def _example_count(batch: dict) -> float:
    """Examples in the global batch: weighted rows, or the examples packed into them (``segment_weight``)."""
    weights = batch["example_weight"]
    if "segment_weight" in batch:
        weights = weights[:, None] * batch["segment_weight"]
    return jax.process_count() * float(np.sum(weights > 0))


def batch_fingerprint(batch: dict) -> int:
    """An order-sensitive integer summary of a batch's real token ids."""
    ids = batch["input_ids"].astype(np.int64) * batch["example_weight"].astype(np.int64)[:, None]
    weights = np.arange(1, ids.size + 1, dtype=np.int64).reshape(ids.shape)
    return int(np.sum(ids * weights) % 1_000_000_007)


def _params_target(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
