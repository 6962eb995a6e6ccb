"""The training loop: the one place with side effects (logging, evaluation, checkpoints, files).

``train(config, workdir)`` builds everything from the config, resumes from the workdir's latest
checkpoint when there is one, trains, evaluates, keeps the best checkpoint, and writes the reports.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np

from mgpt import config as config_lib
from mgpt import optim, parallel
from mgpt import peft as peft_lib
from mgpt.data import Batches, build_datasets
from mgpt.models import build_model, load_pretrained
from mgpt.models.hf import load_tokenizer, pretrained_spec
from mgpt.peft.checkpoint import TrainableOnly
from mgpt.tasks import get_task
from mgpt.train import checkpoint as checkpoint_lib
from mgpt.train import engine as engine_lib
from mgpt.train import evaluation, reporting
from mgpt.train.step import eval_step

log = logging.getLogger("mgpt")


@dataclasses.dataclass
class Run:
    """Everything a run builds once at start-up."""

    config: config_lib.ExperimentConfig
    model: Any
    params: Any
    spec: Any
    tokenizer: Any
    data: Any
    task: Any
    mesh: Any
    trainable: Any = None  # bool tree like params (True = trained), or None when everything trains
    layout: Any = None  # mgpt.parallel.Layout: how params, optimizer state and activations lie on the mesh

    def batches(self, split: str, batch_size: int, shuffle: bool) -> Batches:
        return Batches(self.data.splits[split], batch_size, self.config.train.seed, shuffle=shuffle)

    @functools.cached_property
    def eval_fn(self):
        return jax.jit(functools.partial(eval_step, model=self.model, task=self.task))


def build_run(config: config_lib.ExperimentConfig) -> Run:
    """Load the checkpoint, the data and the task; make the mesh and the layout on it."""
    task = get_task(config.task.kind, config.task.loss_chunk_size)
    mesh = parallel.make_mesh(config.parallel)
    # The tokenizer comes with the checkpoint; the label count from the data, unless configured.
    tokenizer = load_tokenizer(config.model.name_or_path)
    data = build_datasets(config.data, config.task.kind, tokenizer)
    num_labels = config.task.num_labels or len(data.label_names) or None
    kwargs = dict(task=task.head,  # the model head the task needs (multi-label uses the classification head)
                  num_labels=num_labels, dtype=config.model.dtype, dropout=config.model.dropout,
                  remat=config.model.remat, scan_layers=config.model.scan_layers,
                  attention_impl=config.model.attention_impl)
    # The layout comes from the model's logical axis names (an abstract init), before any weight is read,
    # so each tensor is placed straight onto its sharding as it loads.
    layout = parallel.make_layout(config.parallel, mesh, build_model(pretrained_spec(config.model.name_or_path,
                                                                                     **kwargs)))
    direct = config.parallel.mode == "jit" and jax.process_count() == 1  # else the engine lays params out
    model, params, spec, tokenizer = load_pretrained(
        config.model.name_or_path, seed=config.train.seed,
        shardings=layout.model_param_shardings() if direct else None, **kwargs)
    trainable = _trainable_mask(config, params)
    if config.peft.method != "none":
        # PEFT: params become {"base", "peft"}; optimizer.trainable (a regex over "base/..." and "peft/..."
        # paths) can add more trained params, e.g. the LayerNorms.
        model, params = peft_lib.wrap(model, params, spec, config.peft, jax.random.PRNGKey(config.train.seed),
                                      extra_trainable=config.optimizer.trainable)
        trainable = model.trainable_mask(params)
    return Run(config, model, params, spec, tokenizer, data, task, mesh, trainable, layout)


def total_steps(config: config_lib.ExperimentConfig, steps_per_epoch: int) -> int:
    if config.train.max_steps > 0:
        return config.train.max_steps
    return max(1, math.ceil(config.train.num_epochs * steps_per_epoch))


def best_metric_name(config: config_lib.ExperimentConfig, task) -> tuple[str, str]:
    """The ``split/metric`` that picks the best checkpoint, and whether higher is better."""
    if config.train.best_metric:
        return config.train.best_metric, config.train.best_mode
    split = config.train.eval_splits[0] if config.train.eval_splits else "validation"
    return f"{split}/{task.default_metric}", task.default_mode


def _improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train(config: config_lib.ExperimentConfig, workdir: str, stop_after: int | None = None) -> dict:
    """Train (or resume) in ``workdir``; returns the final evaluation reports by split.

    ``stop_after`` ends the run after that many steps as a pre-emption would (a checkpoint is
    written, no final evaluation); running again resumes exactly where it stopped.
    """
    parallel.initialize_distributed(config.parallel)
    enable_compilation_cache(config.train.compilation_cache_dir)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        config_lib.save_config(config, os.path.join(workdir, "config.json"))
    run = build_run(config)
    if jax.process_index() == 0:  # what data cleaning dropped, by split and reason
        evaluation.write_json(os.path.join(workdir, "cleaning.json"), run.data.cleaning)
    loop = _Loop(run, workdir)
    try:
        finished = loop.run(stop_after)
    finally:
        loop.close()
    return loop.finish() if finished else {}


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

    def __init__(self, run: Run, workdir: str):
        config, tc = run.config, run.config.train
        self.run_, self.workdir, self.tc = run, workdir, tc
        self.batches = run.batches("train", tc.batch_size, shuffle=True)
        self.steps = total_steps(config, self.batches.steps_per_epoch)
        self.eval_every = tc.eval_every or self.batches.steps_per_epoch
        optimizer = optim.make_optimizer(config.optimizer, self.steps, run.params, trainable_mask=run.trainable)
        log.info("parameters: %d total, %d trainable", optim.count_parameters(run.params),
                 optim.count_parameters(run.params, run.trainable))
        self.engine = engine_lib.make_engine(config.parallel.mode, run.mesh, run.model, run.task, optimizer,
                                             config.optimizer.accumulation_steps, run.layout)
        self.state = self.engine.create_state(run.params, tc.seed)
        self.checkpoints = None
        if config.checkpoint.enabled:
            self.checkpoints = checkpoint_lib.Checkpoints(workdir, config.checkpoint, _partial(run))
        self.meta = {"best_value": None, "best_step": None, "bad_evals": 0, "label_names": list(run.data.label_names)}
        self.start = 0
        if self.checkpoints is not None and self.checkpoints.latest_step() is not None:
            restored, self.meta = self.checkpoints.restore(self.engine.restore_target(run.params, tc.seed),
                                                           fill=run.params)
            self.state = self.engine.from_checkpoint(restored)
            self.start = int(restored["step"])
            log.info("resumed from %s at step %d", os.path.join(workdir, checkpoint_lib.LATEST_DIR), self.start)
        self.last_step = self.start
        self.writer = reporting.MetricsWriter(workdir, resume_step=self.start or None,
                                              enabled=jax.process_index() == 0)
        self.metric_name, self.mode = best_metric_name(config, run.task)

    def run(self, stop_after: int | None) -> bool:
        """Train to the end (True) or until ``stop_after`` / early stopping ends it (True / False)."""
        tc, checkpoint_cfg = self.tc, self.run_.config.checkpoint
        if tc.early_stopping_patience and self.meta["bad_evals"] >= tc.early_stopping_patience:
            log.info("this run already stopped early at step %d; not training further", self.start)
            return True  # a rerun of an early-stopped run only re-evaluates, as the first run ended
        progress = _progress(tc.progress_bar and jax.process_index() == 0, self.start, self.steps)
        window = {"tokens": 0.0, "steps": 0, "start": time.perf_counter()}
        try:
            for step in range(self.start, self.steps):
                host_batch = self.batches.batch_at(step, jax.process_index(), jax.process_count())
                self.state, metrics = self.engine.step(self.state, host_batch)
                done = self.last_step = step + 1
                window["steps"] += 1
                window["tokens"] += jax.process_count() * float(
                    np.sum(host_batch["attention_mask"] * host_batch["example_weight"][:, None]))
                if done % tc.log_every == 0 or done == self.steps:
                    values = self._log_train(done, metrics, window, host_batch)
                    progress.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{values['tokens_per_second']:.0f}")
                    window = {"tokens": 0.0, "steps": 0, "start": time.perf_counter()}
                progress.update(1)
                stop_early = False
                if done % self.eval_every == 0 or done == self.steps:
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
        finally:
            progress.close()
        return True

    def _log_train(self, done: int, metrics: dict, window: dict, host_batch: dict) -> dict:
        metrics = parallel.to_host(metrics)  # waits for the step: the timing below is real
        elapsed = time.perf_counter() - window["start"]
        values = {
            "loss": metrics["loss"],
            "grad_norm": metrics["grad_norm"],
            "param_norm": metrics["param_norm"],
            "tokens_per_second": window["tokens"] / max(elapsed, 1e-9),
            "seconds_per_step": elapsed / window["steps"],
            "epoch": done / self.batches.steps_per_epoch,
            # Which examples the last step saw: lets a resumed run be checked against a straight one.
            "batch_fingerprint": batch_fingerprint(host_batch),
        }
        self.writer.write("train", done, values)
        return values

    def _evaluate(self, done: int) -> bool:
        """Evaluate, keep the best params; True when early stopping says stop."""
        headline = {}
        params = self.engine.params(self.state)
        for split in self.tc.eval_splits:
            if split in self.run_.data.splits:
                _, scalars = evaluation.evaluate_split(self.run_, params, split)
                headline.update({f"{split}/{k}": v for k, v in scalars.items()})
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
        if self.checkpoints is not None:
            self.checkpoints.save(done, self.engine.checkpoint_view(self.state), self.meta)

    def finish(self) -> dict:
        """Evaluate the best (or last) params on the final splits and write the reports and curves."""
        run, step = self.run_, self.last_step
        params = self.engine.params(self.state)
        final_from = "last"
        if self.checkpoints is not None and self.meta["best_step"] is not None and run.config.checkpoint.keep_best:
            params, _, _ = checkpoint_lib.restore_params(os.path.join(self.workdir, checkpoint_lib.BEST_DIR),
                                                         _params_target(params), self.checkpoints.partial, params)
            final_from = (f"best (step {self.meta['best_step']}, "
                          f"{self.metric_name}={self.meta['best_value']:.4f})")
        writer = reporting.MetricsWriter(self.workdir, enabled=jax.process_index() == 0)
        reports = {}
        for split in self.tc.final_eval_splits:
            if split in run.data.splits:
                report, scalars = evaluation.evaluate_split(run, params, split)
                report["params"] = final_from
                if jax.process_index() == 0:
                    evaluation.write_report(self.workdir, split, report)
                writer.write("final", step, {f"{split}/{k}": v for k, v in scalars.items()})
                reports[split] = report
        # Guardrail: shapes are static, so each step function must have compiled exactly once.
        writer.write("final", step, {"train_step_compilations": self.engine.compilations(),
                                     "eval_step_compilations": run.eval_fn._cache_size()})
        writer.close()
        if jax.process_index() == 0:
            reporting.plot_curves(self.workdir)
        return reports

    def close(self) -> None:
        self.writer.close()
        if self.checkpoints is not None:
            self.checkpoints.close()


def batch_fingerprint(batch: dict) -> int:
    """An order-sensitive integer summary of a batch's real token ids."""
    ids = batch["input_ids"].astype(np.int64) * batch["example_weight"].astype(np.int64)[:, None]
    weights = np.arange(1, ids.size + 1, dtype=np.int64).reshape(ids.shape)
    return int(np.sum(ids * weights) % 1_000_000_007)


def _trainable_mask(config, params):
    if config.optimizer.trainable == "all":
        return None
    return optim.trainable_mask(params, config.optimizer.trainable)


def _partial(run: Run):
    """How checkpoints pack params: None (all of them), or only the trained ones (checkpoint.trainable_only)."""
    if not run.config.checkpoint.trainable_only:
        return None
    mask = run.trainable if run.trainable is not None else jax.tree_util.tree_map(lambda _: True, run.params)
    return TrainableOnly.create(run.params, mask, run.config.model.name_or_path)


def _params_target(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)


def _progress(enabled: bool, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="train", dynamic_ncols=True)


def load_for_inference(config: config_lib.ExperimentConfig, checkpoint: str) -> tuple[Run, Any, str]:
    """The run's model and data with params restored from a checkpoint (a workdir, ``best/`` or ``checkpoints/``)."""
    run = build_run(config)
    shardings = run.layout.param_shardings(run.params)  # restored straight onto the run's layout
    target = jax.tree_util.tree_map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), run.params, shardings
    )
    params, meta, where = checkpoint_lib.restore_params(checkpoint, target, _partial(run), run.params)
    saved_labels = meta.get("label_names")
    if saved_labels is not None and list(saved_labels) != list(run.data.label_names):
        raise ValueError(
            f"label names in the checkpoint {saved_labels} differ from the data's {list(run.data.label_names)}; "
            "pass the same data.labels the run was trained with"
        )
    return run, params, where
