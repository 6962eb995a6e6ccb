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
from mgpt.data import Batches, build_datasets
from mgpt.models import load_pretrained
from mgpt.models.hf import load_tokenizer
from mgpt.tasks import get_task
from mgpt.train import checkpoint as checkpoint_lib
from mgpt.train import evaluation, reporting
from mgpt.train import state as state_lib
from mgpt.train.step import eval_step, train_step

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

    def batches(self, split: str, batch_size: int, shuffle: bool) -> Batches:
        return Batches(self.data.splits[split], batch_size, self.config.train.seed, shuffle=shuffle)

    @functools.cached_property
    def eval_fn(self):
        return jax.jit(functools.partial(eval_step, model=self.model, task=self.task))


def build_run(config: config_lib.ExperimentConfig) -> Run:
    """Load the checkpoint, the data and the task; make the mesh."""
    task = get_task(config.task.kind)
    mesh = parallel.make_mesh(config.parallel)
    # The tokenizer comes with the checkpoint; the label count from the data, unless configured.
    tokenizer = load_tokenizer(config.model.name_or_path)
    data = build_datasets(config.data, config.task.kind, tokenizer)
    num_labels = config.task.num_labels or len(data.label_names) or None
    model, params, spec, tokenizer = load_pretrained(
        config.model.name_or_path,
        task=config.task.kind,
        num_labels=num_labels,
        dtype=config.model.dtype,
        dropout=config.model.dropout,
        seed=config.train.seed,
    )
    return Run(config, model, params, spec, tokenizer, data, task, mesh)


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
    os.makedirs(workdir, exist_ok=True)
    config_lib.save_config(config, os.path.join(workdir, "config.json"))
    run = build_run(config)
    tc = config.train
    train_batches = run.batches("train", tc.batch_size, shuffle=True)
    steps = total_steps(config, train_batches.steps_per_epoch)
    eval_every = tc.eval_every or train_batches.steps_per_epoch
    optimizer = optim.make_optimizer(config.optimizer, steps, run.params)
    trainable = optim.count_parameters(run.params, _trainable_mask(config, run.params))
    log.info("parameters: %d total, %d trainable", optim.count_parameters(run.params), trainable)

    state, shardings = state_lib.create_state(run.params, optimizer, tc.seed, run.mesh)
    checkpoints = checkpoint_lib.Checkpoints(workdir, config.checkpoint) if config.checkpoint.enabled else None
    loop_meta = {"best_value": None, "best_step": None, "bad_evals": 0, "label_names": list(run.data.label_names)}
    start = 0
    if checkpoints is not None and checkpoints.latest_step() is not None:
        target = state_lib.restore_target(run.params, optimizer, tc.seed, shardings)
        state, loop_meta = checkpoints.restore(target)
        start = int(state["step"])
        log.info("resumed from %s at step %d", os.path.join(workdir, checkpoint_lib.LATEST_DIR), start)
    writer = reporting.MetricsWriter(workdir, resume_step=start if start else None)
    metric_name, mode = best_metric_name(config, run.task)
    step_fn = jax.jit(
        functools.partial(
            train_step,
            model=run.model,
            task=run.task,
            optimizer=optimizer,
            accumulation_steps=config.optimizer.accumulation_steps,
        ),
        donate_argnums=0,
        out_shardings=(shardings, None),
    )

    progress = _progress(tc.progress_bar, start, steps)
    window_tokens, window_steps, window_start = 0.0, 0, time.perf_counter()
    stopped_early = False
    for step in range(start, steps):
        host_batch = train_batches.batch_at(step)
        state, metrics = step_fn(state, parallel.shard_batch(host_batch, run.mesh))
        done = step + 1
        window_steps += 1
        window_tokens += float(np.sum(host_batch["attention_mask"] * host_batch["example_weight"][:, None]))
        if done % tc.log_every == 0 or done == steps:
            metrics = jax.device_get(metrics)  # waits for the step: the timing below is real
            elapsed = time.perf_counter() - window_start
            values = {
                "loss": metrics["loss"],
                "grad_norm": metrics["grad_norm"],
                "param_norm": metrics["param_norm"],
                "tokens_per_second": window_tokens / max(elapsed, 1e-9),
                "seconds_per_step": elapsed / window_steps,
                "epoch": done / train_batches.steps_per_epoch,
                # Which examples the last step saw: lets a resumed run be checked against a straight one.
                "batch_fingerprint": batch_fingerprint(host_batch),
            }
            writer.write("train", done, values)
            progress.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{values['tokens_per_second']:.0f}")
            window_tokens, window_steps, window_start = 0.0, 0, time.perf_counter()
        progress.update(1)
        if done % eval_every == 0 or done == steps:
            headline = {}
            for split in tc.eval_splits:
                if split in run.data.splits:
                    _, scalars = evaluation.evaluate_split(run, state["params"], split)
                    headline.update({f"{split}/{k}": v for k, v in scalars.items()})
            if headline:
                writer.write("eval", done, headline)
            value = headline.get(metric_name)
            if value is not None and _improved(value, loop_meta["best_value"], mode):
                loop_meta.update(best_value=value, best_step=done, bad_evals=0)
                if checkpoints is not None:
                    checkpoints.save_best(done, state["params"], dict(loop_meta, metric=metric_name))
            elif value is not None:
                loop_meta["bad_evals"] += 1
            if checkpoints is not None and not config.checkpoint.save_every:
                checkpoints.save(done, state, loop_meta)
            if tc.early_stopping_patience and loop_meta["bad_evals"] >= tc.early_stopping_patience:
                log.info("early stop at step %d: %s did not improve for %d evaluations", done, metric_name,
                         loop_meta["bad_evals"])
                stopped_early = True
        if checkpoints is not None and config.checkpoint.save_every and (
            done % config.checkpoint.save_every == 0 or done == steps or stopped_early
        ):
            checkpoints.save(done, state, loop_meta)
        if stopped_early:
            break
        if stop_after is not None and done >= stop_after and done < steps:
            if checkpoints is not None:
                checkpoints.save(done, state, loop_meta)
                checkpoints.close()
            writer.close()
            progress.close()
            log.info("stopped after step %d as asked; run again to resume", done)
            return {}
    progress.close()

    final_params = state["params"]
    final_from = "last"
    if checkpoints is not None:
        checkpoints.wait()
        if loop_meta["best_step"] is not None and config.checkpoint.keep_best:
            final_params, _, _ = checkpoint_lib.restore_params(
                os.path.join(workdir, checkpoint_lib.BEST_DIR), _params_target(state["params"])
            )
            final_from = f"best (step {loop_meta['best_step']}, {metric_name}={loop_meta['best_value']:.4f})"
    reports = {}
    for split in tc.final_eval_splits:
        if split in run.data.splits:
            report, scalars = evaluation.evaluate_split(run, final_params, split)
            report["params"] = final_from
            evaluation.write_report(workdir, split, report)
            writer.write("final", int(state["step"]), {f"{split}/{k}": v for k, v in scalars.items()})
            reports[split] = report
    # Guardrail: shapes are static, so each step function must have compiled exactly once.
    writer.write("final", int(state["step"]), {"train_step_compilations": step_fn._cache_size(),
                                                "eval_step_compilations": run.eval_fn._cache_size()})
    writer.close()
    if checkpoints is not None:
        checkpoints.close()
    reporting.plot_curves(workdir)
    return reports


def batch_fingerprint(batch: dict) -> int:
    """An order-sensitive integer summary of a batch's real token ids."""
    ids = batch["input_ids"].astype(np.int64) * batch["example_weight"].astype(np.int64)[:, None]
    weights = np.arange(1, ids.size + 1, dtype=np.int64).reshape(ids.shape)
    return int(np.sum(ids * weights) % 1_000_000_007)


def _trainable_mask(config, params):
    if config.optimizer.trainable == "all":
        return None
    return optim.trainable_mask(params, config.optimizer.trainable)


def _params_target(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)


def _progress(enabled: bool, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="train", dynamic_ncols=True)


def load_for_inference(config: config_lib.ExperimentConfig, checkpoint: str) -> tuple[Run, Any, str]:
    """The run's model and data with params restored from a checkpoint (a workdir, ``best/`` or ``checkpoints/``)."""
    run = build_run(config)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(run.mesh)), run.params
    )
    params, meta, where = checkpoint_lib.restore_params(checkpoint, target)
    saved_labels = meta.get("label_names")
    if saved_labels is not None and list(saved_labels) != list(run.data.label_names):
        raise ValueError(
            f"label names in the checkpoint {saved_labels} differ from the data's {list(run.data.label_names)}; "
            "pass the same data.labels the run was trained with"
        )
    return run, params, where
