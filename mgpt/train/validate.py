"""Cross-field checks of a whole experiment config, run before any tokenizer, checkpoint or data file is opened.

:func:`mgpt.config.check` validates each field against its declared type (pydantic); :func:`validate` adds
the rules that span sections. It lives here, in ``train/``, because those rules need what sits above
``config.py`` in the layers: the metric names each task reports (``mgpt.tasks``) and Optax's optimizer
factories. The CLI (train, eval, predict, generate) and :func:`mgpt.train.loop.train` call it first. Every
rule decides from the config alone (no I/O) and fails with one :class:`~mgpt.config.ConfigError` line
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import optax
import pydantic

from mgpt import config as config_lib
from mgpt import text_metrics
from mgpt.data import augment
from mgpt.config import ConfigError, ExperimentConfig
from mgpt.tasks import LABEL_SMOOTHING_KINDS, TASKS, get_task
from mgpt.train import objective
from mgpt.train.fingerprint import PARTS

_ALL_KINDS = typing.get_args(config_lib.TaskKind)
_CAUSAL = ("causal_lm", "generation")
_NOT_TOKENS = tuple(kind for kind in _ALL_KINDS if kind != "token_classification")
# What each reader can feed (mgpt.data.reading): words with tags come from CoNLL files or TFDS;
# CSV / TSV / JSONL / lines hold one example per row; parallel text pairs only make prompts and targets;
# chat conversations train a causal LM on their assistant turns.
FORMAT_TASKS = {
    "csv": _NOT_TOKENS, "tsv": _NOT_TOKENS, "jsonl": _NOT_TOKENS, "lines": _NOT_TOKENS,
    "conll": ("token_classification",), "parallel": _CAUSAL, "tfds": _ALL_KINDS, "chat": _CAUSAL,
}
_SPLIT_FILES = {"train": "train_file", "validation": "validation_file", "test": "test_file",
                "predict": "predict_file"}


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{key}={value!r}: {expected}")


def _names(values) -> str:
    return ", ".join(repr(v) for v in values) or "none"


def metric_names(config: ExperimentConfig) -> tuple[str, ...]:
    """The metrics an evaluation of ``config.task.kind`` reports (each logged as ``<split>/<metric>``)."""
    task = TASKS[config.task.kind]
    names = tuple(task.metric_names)
    if config.task.kind == "generation":  # plus the text metrics it is configured with
        for metric in config.task.generation_metrics:
            names += text_metrics.ROUGE_TYPES if metric == "rouge" else (metric,)
    return names


def available_splits(data: config_lib.DataConfig) -> tuple[str, ...] | None:
    """The splits the data as configured has: files, TFDS splits, and splits carved from train by ratio.

    None when that is known only after reading (TFDS without ``data.tfds_splits`` takes the data set's
    own train / validation / test), or when no data source is configured (e.g. ``mgpt generate --model``).
    """
    if data.format == "tfds":
        if not data.tfds_splits:
            return None
        present = set(data.tfds_splits)
    else:
        present = {split for split, key in _SPLIT_FILES.items() if getattr(data, key)}
        if not present:
            return None
    if "train" in present:
        present |= {split for split, ratio in (("validation", data.validation_ratio), ("test", data.test_ratio))
                    if ratio > 0}
    return tuple(split for split in _SPLIT_FILES if split in present)


def _check_data_format(config: ExperimentConfig) -> None:
    data, kind = config.data, config.task.kind
    if kind not in FORMAT_TASKS[data.format]:
        formats = [fmt for fmt, kinds in FORMAT_TASKS.items() if kind in kinds]
        _fail("data.format", data.format, f"task.kind={kind!r} reads one of {_names(formats)}")
    records = bool(data.prompt_template or data.target_column)
    if data.format == "parallel" and not records:
        _fail("data.prompt_template", data.prompt_template, "data.format='parallel' gives source / target fields: "
              "set data.prompt_template (e.g. 'German: {source}\\nEnglish:') and data.target_column='target'")
    if data.format == "lines" and kind in _CAUSAL and records:
        _fail("data.format", data.format, "has no named fields for data.prompt_template / data.target_column; "
              "expected one of 'csv', 'tsv', 'jsonl', 'parallel', 'tfds'")
    if data.system_prompt and not data.use_chat_template:
        _fail("data.system_prompt", data.system_prompt, "is the system turn of data.use_chat_template=True; "
              "a conversation (data.format='chat') carries its own")
    if data.format == "chat":  # the chat template makes the prompt and the messages hold the target
        for key in ("prompt_template", "target_column", "text_pair_column"):
            if getattr(data, key):
                _fail(f"data.{key}", getattr(data, key), "data.format='chat' renders each conversation with the "
                      "tokenizer's chat template and scores the assistant turns; expected ''")
        if not data.messages_column:
            _fail("data.messages_column", data.messages_column, "data.format='chat' needs the field holding "
                  "each record's messages, e.g. 'messages'")
    elif data.use_chat_template and not (kind in _CAUSAL and data.target_column):
        _fail("data.use_chat_template", data.use_chat_template, "renders data.prompt_template / data.text_column as "
              "the user turn and data.target_column as the assistant turn of a causal_lm or generation task; "
              "set data.target_column (or data.format='chat' for conversations)")
    elif kind == "generation" and not (data.target_column or data.text_pair_column):
        _fail("data.target_column", data.target_column, "task.kind='generation' needs the field holding the "
              "reference text")
    if data.format == "tfds":
        if not data.tfds_name:
            _fail("data.tfds_name", data.tfds_name, "data.format='tfds' needs a data set name, e.g. 'glue/sst2'")
        for split, key in _SPLIT_FILES.items():
            if getattr(data, key) and split != "predict":
                _fail(f"data.{key}", getattr(data, key), "data.format='tfds' reads data.tfds_name; expected no file")
    elif data.tfds_name:
        _fail("data.tfds_name", data.tfds_name,
              f"is read only with data.format='tfds' (data.format is {data.format!r})")


def _check_task_options(config: ExperimentConfig) -> None:
    data, task = config.data, config.task
    if task.label_smoothing and task.kind not in LABEL_SMOOTHING_KINDS:
        _fail("task.label_smoothing", task.label_smoothing, f"smooths the one-hot targets of task.kind "
              f"{_names(LABEL_SMOOTHING_KINDS)}; expected 0 for {task.kind!r}")
    if task.loss_chunk_size and task.kind not in _CAUSAL:
        _fail("task.loss_chunk_size", task.loss_chunk_size, f"only for task.kind {_names(_CAUSAL)}; expected 0 "
              f"for {task.kind!r}")
    if data.stride and task.kind != "token_classification":
        _fail("data.stride", data.stride, f"sliding windows are for task.kind='token_classification'; expected 0 "
              f"for {task.kind!r}")
    if data.pack and config.peft.method == "prompt":
        _fail("data.pack", data.pack, "prompt tuning puts its virtual tokens in front of one example per row; "
              "expected false with peft.method='prompt'")
    if data.pack and task.kind not in _CAUSAL:
        packed_eval = [split for split in (*config.train.eval_splits, *config.train.final_eval_splits)
                       if split == "train"]
        if packed_eval:
            _fail("data.pack", data.pack, "packs the train split, which train.eval_splits / final_eval_splits "
                  "evaluate; expected false, or no 'train' among the evaluated splits")


def _check_shapes(config: ExperimentConfig) -> None:
    data = config.data
    too_long = [n for n in data.bucket_lengths if n > data.max_length]
    if too_long:
        _fail("data.bucket_lengths", data.bucket_lengths, f"lengths up to data.max_length={data.max_length} "
              f"(too long: {too_long})")
    if data.padding == "max_length" and (data.bucket_lengths or data.group_by_length):
        key = "data.bucket_lengths" if data.bucket_lengths else "data.group_by_length"
        _fail(key, getattr(data, key.split(".")[1]), "is for data.padding='buckets' (data.padding is 'max_length', "
              "which pads every batch to data.max_length)")


def _check_splits(config: ExperimentConfig) -> None:
    data, train = config.data, config.train
    if data.validation_ratio + data.test_ratio >= 1:
        _fail("data.validation_ratio", data.validation_ratio, f"with data.test_ratio={data.test_ratio} it leaves "
              "no training example; expected a sum below 1")
    available = available_splits(data)
    if available is None:
        return
    checked = [("train.eval_splits", train.eval_splits)]
    # The default final splits mean "validation and test, those the data has".
    if train.final_eval_splits != config_lib.TrainConfig().final_eval_splits:
        checked.append(("train.final_eval_splits", train.final_eval_splits))
    for key, splits in checked:
        missing = [split for split in splits if split not in available]
        if missing:
            _fail(key, splits, f"{missing[0]!r} is not in the data as configured; expected splits among "
                  f"{_names(available)} (a split comes from data.<split>_file, data.tfds_splits, or "
                  "data.validation_ratio / data.test_ratio)")


def _check_resume_changes(config: ExperimentConfig) -> None:
    unknown = [part for part in config.train.allow_resume_changes if part not in (*PARTS, "all")]
    if unknown:
        _fail("train.allow_resume_changes", config.train.allow_resume_changes, f"names among {_names(PARTS)} or "
              f"'all' (unknown: {unknown})")


def _check_best_metric(config: ExperimentConfig) -> None:
    train = config.train
    reported = metric_names(config)
    if train.best_metric:
        split, _, metric = train.best_metric.rpartition("/")
        if split not in train.eval_splits:
            _fail("train.best_metric", train.best_metric, f"expected <split>/<metric> with a split in "
                  f"train.eval_splits ({_names(train.eval_splits)})")
        if metric not in reported:
            _fail("train.best_metric", train.best_metric, f"task.kind={config.task.kind!r} reports "
                  f"{_names(reported)}; expected {split}/<one of them>")
    if train.early_stopping_patience and not train.eval_splits:
        _fail("train.early_stopping_patience", train.early_stopping_patience, "needs an evaluated split in "
              "train.eval_splits; expected 0 when nothing is evaluated")


def optax_factories() -> list[str]:
    """Names of the Optax functions that build an optimizer from a learning rate."""
    return sorted(name for name in dir(optax)
                  if name[:1].islower() and "learning_rate" in _parameters(getattr(optax, name)))


def _parameters(obj) -> dict[str, inspect.Parameter]:
    if not callable(obj):
        return {}
    try:
        return dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return {}


def _describe(annotation: Any) -> str:
    """What an Optax annotation such as ``Union[jax.Array, ..., float]`` asks for, in words."""
    kinds = set(typing.get_args(annotation)) or {annotation}
    if kinds <= {bool, type(None)}:
        return "a bool (true/false)"
    if kinds & {int, float}:
        return "a number"
    return "a string" if str in kinds else f"a value of type {annotation}"


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits Optax's annotation, checked strictly (no "0.9" -> 0.9); True when the
    annotation cannot be checked."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return True
    try:
        adapter = pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # an annotation pydantic has no schema for: Optax checks it itself
        return True
    try:
        adapter.validate_python(value, strict=True)
    except pydantic.ValidationError:
        return False
    return True


# Keywords mgpt fills from other fields of optimizer.*: setting them in kwargs too would be ignored or clash.
_FROM_FIELDS = {"learning_rate": "optimizer.learning_rate (and its schedule)", "weight_decay": "optimizer.weight_decay",
                "mask": "optimizer.decay_biases_and_norms"}


def _check_optimizer(config: ExperimentConfig) -> None:
    opt = config.optimizer
    parameters = _parameters(getattr(optax, opt.name, None))
    if not opt.name[:1].islower() or "learning_rate" not in parameters:
        _fail("optimizer.name", opt.name, f"expected an Optax optimizer, one of {', '.join(optax_factories())}")
    keywords = [name for name in parameters if name not in _FROM_FIELDS]
    for key, value in opt.kwargs.items():
        if key in _FROM_FIELDS:
            _fail(f"optimizer.kwargs.{key}", value, f"set {_FROM_FIELDS[key]} instead")
        if key not in parameters:
            _fail(f"optimizer.kwargs.{key}", value, f"optax.{opt.name} takes {', '.join(keywords)}")
        parameter = parameters[key]
        if not _accepts(parameter.annotation, value):
            _fail(f"optimizer.kwargs.{key}", value, f"expected {_describe(parameter.annotation)} "
                  f"(optax.{opt.name}'s default: {parameter.default!r})")
    if opt.ema_warmup and opt.ema_decay == 0:
        _fail("optimizer.ema_warmup", True, "it warms up the weight average, and optimizer.ema_decay is 0 (no "
              "average); expected false, or an optimizer.ema_decay above 0")


def _check_augmentation(config: ExperimentConfig) -> None:
    """data.augment and train.eval_perturbations: known ops and rates for this task (mgpt.data.augment)."""
    data, label_kind = config.data, TASKS[config.task.kind].label_kind
    changes = augment.text_ops(data.augment, label_kind, data.synonyms_file)
    augment.text_ops(config.train.eval_perturbations, label_kind, data.synonyms_file, key="train.eval_perturbations")
    if changes and (data.pack or data.stride):
        key = "data.pack" if data.pack else "data.stride"
        _fail(key, getattr(data, key.split(".")[1]), f"data.augment re-encodes one row per training example "
              f"({', '.join(op.spec for op in changes)}); expected {'false' if data.pack else 0} with text or "
              "token ops in data.augment")
    if data.augment_probability < 1.0 and not changes:
        _fail("data.augment_probability", data.augment_probability, "it chooses which training examples the text or "
              f"token ops of data.augment rewrite, and data.augment={tuple(data.augment)} has none; expected 1.0")
    if data.format == "chat":
        for key, specs in (("data.augment", changes), ("train.eval_perturbations", config.train.eval_perturbations)):
            if specs:
                _fail(key, tuple(getattr(op, "spec", op) for op in specs), "data.format='chat' has conversations, "
                      "not a text column to augment; expected ()")


def _check_robust(config: ExperimentConfig) -> None:
    """The robust objective's combinations (mgpt.train.objective), before any model is loaded."""
    objective.check(config, get_task(config.task.kind, config.task.loss_chunk_size))


RULES = (_check_data_format, _check_task_options, _check_shapes, _check_splits, _check_resume_changes,
         _check_best_metric, _check_optimizer, _check_augmentation, _check_robust)


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` checked field by field and across sections; the first broken rule raises ConfigError."""
    config = config_lib.check(config)
    for rule in RULES:
        rule(config)
    return config
