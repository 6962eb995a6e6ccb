"""Assembling a run: the model, params, tokenizer, data, task, mesh and layout built once from a config.

``build_run(config)`` is what training, evaluation and prediction start from; ``load_for_inference``
adds the params of a saved checkpoint. Nothing here trains: the loop is :mod:`mgpt.train.loop`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any

import jax

from mgpt import config as config_lib
from mgpt import optim, parallel
from mgpt import peft as peft_lib
from mgpt.data import Batches, augmented, build_datasets, lengths
from mgpt.data.batching import TOKEN_KEYS, AugmentedBatches
from mgpt.data.labels import LABEL_NONE, LABEL_TAGS
from mgpt.models import build_model, load_pretrained
from mgpt.models.hf import load_tokenizer, pretrained_spec
from mgpt.peft.checkpoint import TrainableOnly
from mgpt.tasks import get_task
from mgpt.train import checkpoint as checkpoint_lib
from mgpt.train.engine import TraceCounter
from mgpt.train.step import eval_step


# Label kinds with one label per token: their labels (and predictions) have a token axis.
TOKEN_LABELS = (LABEL_TAGS, LABEL_NONE)


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
        """The batches of ``split`` in the run's order (seeded by ``train.seed``), shaped by ``data.padding``:
        cut to bucket lengths (and length-grouped in training with ``data.group_by_length``), or full length."""
        data_cfg = self.config.data
        buckets = None
        if data_cfg.padding == "buckets":
            buckets = lengths.bucket_ladder(data_cfg.max_length, data_cfg.bucket_lengths)
        token_keys = TOKEN_KEYS + (("labels",) if self.data.label_kind in TOKEN_LABELS else ())
        kwargs = dict(shuffle=shuffle, buckets=buckets, token_keys=token_keys,
                      group_by_length=shuffle and data_cfg.group_by_length, group_window=data_cfg.group_window)
        if split == "train" and shuffle and self.augmenter is not None:  # data.augment: rows made afresh each step
            return AugmentedBatches(self.data.splits[split], batch_size, self.config.train.seed,
                                    rows_at=self.augmenter, **kwargs)
        return Batches(self.data.splits[split], batch_size, self.config.train.seed, **kwargs)

    @functools.cached_property
    def augmenter(self) -> augmented.Augmenter | None:
        """Training-time augmentation (``data.augment``'s text and token ops), or None without any."""
        return augmented.train_augmenter(self.config.data, self.config.train.seed, self.task, self.tokenizer,
                                       self.data)

    @functools.cached_property
    def eval_traces(self) -> TraceCounter:
        """The evaluation step, counting its compilations per batch shape."""
        return TraceCounter(functools.partial(eval_step, model=self.model, task=self.task))

    @functools.cached_property
    def eval_fn(self):
        """The jitted evaluation step ``(params, batch) -> {"loss_sum", "count", "predictions"}``."""
        return jax.jit(self.eval_traces)


def build_run(config: config_lib.ExperimentConfig) -> Run:
    """Load the checkpoint, the data and the task; make the mesh and the layout on it."""
    task = get_task(config.task.kind, config.task.loss_chunk_size, config.task.label_smoothing)
    mesh = parallel.make_mesh(config.parallel)
    # The tokenizer comes with the checkpoint; the label count from the data, unless configured.
    tokenizer = load_tokenizer(config.model.name_or_path)
    data = build_datasets(config.data, task, tokenizer)
    if config.train.eval_perturbations:  # robustness evaluation: perturbed copies, built once, same seed every run
        augmented.add_perturbed_splits(data, config.train.eval_perturbations, _perturbed_splits(config, data), task,
                                     tokenizer, config.data)
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
    """The run's length in optimizer steps: ``train.max_steps``, else the epochs rounded up."""
    if config.train.max_steps > 0:
        return config.train.max_steps
    return max(1, math.ceil(config.train.num_epochs * steps_per_epoch))


def best_metric_name(config: config_lib.ExperimentConfig, task) -> tuple[str, str]:
    """The ``split/metric`` that picks the best checkpoint, and whether higher is better."""
    if config.train.best_metric:
        return config.train.best_metric, config.train.best_mode
    split = config.train.eval_splits[0] if config.train.eval_splits else "validation"
    return f"{split}/{task.default_metric}", task.default_mode


def checkpoint_packing(run: Run) -> TrainableOnly | None:
    """How checkpoints pack params: None (all of them), or only the trained ones (checkpoint.trainable_only)."""
    if not run.config.checkpoint.trainable_only:
        return None
    mask = run.trainable if run.trainable is not None else jax.tree_util.tree_map(lambda _: True, run.params)
    return TrainableOnly.create(run.params, mask, run.config.model.name_or_path)


def load_for_inference(config: config_lib.ExperimentConfig, checkpoint: str) -> tuple[Run, Any, str]:
    """The run's model and data with params restored from a checkpoint (a workdir, ``best/`` or ``checkpoints/``)."""
    run = build_run(config)
    shardings = run.layout.param_shardings(run.params)  # restored straight onto the run's layout
    target = jax.tree_util.tree_map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), run.params, shardings
    )
    params, meta, where = checkpoint_lib.restore_params(checkpoint, target, checkpoint_packing(run), run.params)
    saved_labels = meta.get("label_names")
    if saved_labels is not None and list(saved_labels) != list(run.data.label_names):
        raise ValueError(
            f"label names in the checkpoint {saved_labels} differ from the data's {list(run.data.label_names)}; "
            "pass the same data.labels the run was trained with"
        )
    # A run that evaluated its weight average is used with it: best/ holds it as params, a full state in its
    # optimizer state.
    directory, _, step = where.rpartition(" step ")
    from_state = os.path.basename(directory) == checkpoint_lib.LATEST_DIR
    if config.optimizer.ema_decay > 0 and config.train.eval_ema and from_state:
        params = _restore_ema(run, directory, int(step), params)
    return run, params, where


def _restore_ema(run: Run, directory: str, step: int, params: Any) -> Any:
    """``params`` with the weight average (``optimizer.ema_decay``) that the state at ``directory`` ``step`` keeps in
    its optimizer state; only the average is read from the checkpoint."""
    import orbax.checkpoint as ocp

    optimizer = optim.make_optimizer(run.config.optimizer, 1, run.params, trainable_mask=run.trainable)
    abstract = jax.eval_shape(optimizer.init, run.params)
    shardings = run.layout.state_shardings({"params": run.params, "opt_state": abstract})["opt_state"]
    target = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                                    shardings)
    is_ema = lambda node: isinstance(node, optim.EmaState)  # noqa: E731
    # Orbax skips placeholder leaves: everything but the average (moments, pretrained copy) stays on disk.
    target = jax.tree_util.tree_map(lambda node: node if is_ema(node) else ocp.PLACEHOLDER, target,
                                    is_leaf=lambda node: is_ema(node) or isinstance(node, jax.ShapeDtypeStruct))
    item = {"opt_state": target}
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
    finally:
        manager.close()
    return optim.ema_params(restored["state"]["opt_state"], params)


def _perturbed_splits(config: config_lib.ExperimentConfig, data) -> list[str]:
    """The splits robustness evaluation copies: every labelled split (train only when it is evaluated)."""
    evaluated = (*config.train.eval_splits, *config.train.final_eval_splits)
    return [split for split in data.splits if split != "predict" and (split != "train" or "train" in evaluated)]


def _trainable_mask(config, params):
    if config.optimizer.trainable == "all":
        return None
    return optim.trainable_mask(params, config.optimizer.trainable)
