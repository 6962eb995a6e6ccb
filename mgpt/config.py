"""Typed, frozen configuration for an mgpt experiment.

An experiment is a Python file with ``get_config()`` returning :class:`ExperimentConfig`.
``--set a.b=value`` overrides are parsed against the field's declared type, and an unknown key
fails with the list of valid keys at that level.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained checkpoint to start from and how to run it."""

    name_or_path: str = ""  # a local Hugging Face directory, or a hub id when online
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 | float16
    dropout: Optional[float] = None  # override the checkpoint's dropout rates when set
    # Memory and speed (they change how the model runs, not what it computes):
    remat: str = "none"  # recompute layers in the backward pass: none | full | dots | dots_no_batch
    scan_layers: bool = False  # GPT-2 / Llama family: one nn.scan over the layers (params stacked per layer)
    attention_impl: str = ""  # "" (XLA) | cudnn (cuDNN flash attention on NVIDIA GPUs; bf16/fp16, no attn dropout)


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they become token arrays."""

    format: str = "csv"  # csv | tsv | jsonl | conll | tfds | lines (text@label per line) | parallel (dir/train.de->en)
    train_file: str = ""
    validation_file: str = ""
    test_file: str = ""
    predict_file: str = ""  # set by `mgpt predict`: examples to label; labels in it are optional
    text_column: str = "text"
    line_separator: str = "@"  # format=lines: the label follows the last separator (Financial PhraseBank)
    line_encoding: str = "latin-1"  # format=lines: file encoding (the PhraseBank files are latin-1)
    text_pair_column: str = ""  # second segment for sentence-pair tasks; empty for none
    label_column: str = "label"
    conll_token_column: int = 0  # CoNLL: which whitespace-separated column holds the word
    conll_label_column: int = -1  # CoNLL: which column holds the tag (negative counts from the end)
    labels: tuple[str, ...] = ()  # fixed label order; empty means sorted labels seen in training
    max_length: int = 128  # tokens per example; longer inputs are truncated with a warning
    label_all_subwords: bool = False  # token classification: label every sub-word, not only the first
    stride: int = 0  # token classification: > 0 reads long documents as windows overlapping by ~stride tokens
    # Multi-label classification: labels in a file are "a|b" (split on this) or a JSON list.
    label_delimiter: str = "|"
    # TensorFlow Datasets (format="tfds"): text_column / text_pair_column / label_column name its features.
    tfds_name: str = ""  # e.g. "glue/sst2", "conll2003", "cnn_dailymail", "wmt14_translate/de-en"
    tfds_data_dir: str = ""  # where the data set is prepared; empty: TFDS's default (TFDS_DATA_DIR)
    tfds_splits: dict = field(default_factory=dict)  # our split -> TFDS split, e.g. {"train": "train[:90%]"}
    # Cleaning (counts by reason go to <workdir>/cleaning.json). Defaults change nothing.
    normalize_text: bool = False  # Unicode NFKC, runs of spaces -> one space, runs with a newline -> "\n"
    drop_empty: bool = False  # drop examples whose text (or pair, or target) is empty
    drop_duplicates: bool = False  # drop repeats of an earlier example's input within a split
    min_words: int = 0  # drop examples with fewer words (whitespace-separated); 0: no limit
    max_words: int = 0  # drop examples with more words; 0: no limit
    min_chars: int = 0  # drop examples with fewer characters; 0: no limit
    max_chars: int = 0  # drop examples with more characters; 0: no limit
    label_map: dict = field(default_factory=dict)  # rename labels/tags, e.g. {"0": "neg"}; to "" drops it
    # Splitting one source: fractions of train carved out when that split has no file / TFDS split.
    validation_ratio: float = 0.0
    test_ratio: float = 0.0
    split_seed: int = 0
    stratify: bool = True  # single-label classification: keep label proportions in every split
    # Causal LM: prompt from example fields, e.g. "Question: {question}\nAnswer:"; only the target is scored.
    prompt_template: str = ""
    target_column: str = ""  # the field holding the completion (takes the place of text_pair_column)
    pack: bool = False  # causal LM: pack training examples into full rows (segment_ids / position_ids)


@dataclass(frozen=True)
class TaskConfig:
    """The task head and its loss."""

    # sequence_classification | multi_label_classification | token_classification | regression | causal_lm
    # | generation (causal-LM training on the target; evaluated by decoding from each prompt, mgpt.tasks.generation)
    kind: str = "sequence_classification"
    num_labels: int = 0  # 0 means: the number of labels found in the data
    # Generation: metrics of the decoded text against data.target_column, any of rouge (rouge1/2/L, rouge-score),
    # bleu, chrf (sacrebleu), exact_match, token_f1 (SQuAD normalisation). Loss and perplexity are always reported.
    generation_metrics: tuple[str, ...] = ("rouge",)
    max_new_tokens: int = 32  # generation: tokens decoded per example (stops earlier at the tokenizer's EOS)
    temperature: float = 0.0  # generation: 0 is greedy; > 0 samples from softmax(logits / temperature)
    top_k: int = 0  # generation: sample among the k most likely tokens; 0: no limit
    top_p: float = 1.0  # generation: nucleus sampling, the smallest most-likely set with this mass; 1: off
    decode_seed: int = 0  # generation: seed of the sampling
    # causal_lm: compute the loss over this many positions at a time, never holding the whole
    # (batch, length, vocab) logits (nor their gradient); 0: off
    loss_chunk_size: int = 0


@dataclass(frozen=True)
class OptimizerConfig:
    """Any Optax optimizer by name, plus schedule, clipping, decay and accumulation."""

    name: str = "adamw"  # any optax optimizer factory: adamw, adam, sgd, lion, adafactor, lamb, rmsprop, ...
    learning_rate: float = 5e-5
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the factory
    schedule: str = "linear"  # constant | linear | cosine (each after warmup)
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    end_learning_rate_ratio: float = 0.0  # linear / cosine decay end value, relative to the peak
    weight_decay: float = 0.0
    decay_biases_and_norms: bool = False  # by default biases, norm scales and embeddings' norms are not decayed
    max_grad_norm: float = 1.0  # global-norm clipping; 0 disables
    accumulation_steps: int = 1  # micro-batches per update; the batch is split, the update is exact
    trainable: str = "all"  # all | head | regex over parameter paths (see mgpt.optim)


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how often to log and evaluate, when to stop."""

    seed: int = 0
    batch_size: int = 32
    eval_batch_size: int = 64
    num_epochs: float = 3.0
    max_steps: int = 0  # overrides num_epochs when > 0
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate at the end of each epoch
    eval_splits: tuple[str, ...] = ("validation",)  # evaluated during training
    final_eval_splits: tuple[str, ...] = ("validation", "test")  # evaluated with the best (or last) params
    best_metric: str = ""  # e.g. "validation/accuracy"; empty: the task's default
    best_mode: str = "max"  # max | min
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 disables
    progress_bar: bool = True
    compilation_cache_dir: str = ""  # persistent XLA compilation cache shared by runs; "" disables it


@dataclass(frozen=True)
class ParallelConfig:
    """Device mesh and how arrays are laid out on it."""

    mesh: tuple[tuple[str, int], ...] = (("data", -1),)  # -1 takes the remaining devices
    num_devices: int = 0  # 0: all visible devices; otherwise the first N
    mode: str = "jit"  # jit: one program over the mesh | pmap: plain data parallelism with jax.pmap
    # How params / optimizer state / activations map onto the mesh (mode=jit): dp | fsdp | tp | fsdp_tp
    # (sets joined by "_" or "+"); tp needs a "model" mesh axis, e.g. mesh=(("data", 4), ("model", 2)).
    rules: str = "dp"
    # Explicit (logical axis, mesh axis or None) rules replacing `rules`, e.g. (("batch", "data"), ("embed", "data"))
    logical_rules: tuple[tuple[str, Optional[str]], ...] = ()
    distributed: bool = False  # multi-host: call jax.distributed.initialize() (auto-detects TPU pods, SLURM, ...)
    coordinator_address: str = ""  # host:port of process 0, when not auto-detected
    num_processes: int = 0
    process_id: int = -1


@dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpointing and retention."""

    enabled: bool = True
    save_every: int = 0  # steps; 0: at each evaluation and at the end
    max_to_keep: int = 2  # latest checkpoints kept for resuming
    keep_best: bool = True  # also keep the best checkpoint by train.best_metric
    async_save: bool = True
    # Save and restore only the trained parameters (PEFT, or optimizer.trainable); the frozen ones are
    # identified by name and checksum in the metadata, and a different base model fails on restore.
    trainable_only: bool = False


@dataclass(frozen=True)
class PeftConfig:
    """Parameter-efficient fine-tuning (mgpt.peft): which method, and its knobs.

    Every method is a transform of the parameter tree and the forward pass; params become
    ``{"base": <model params>, "peft": <new params>}`` and only ``peft`` (plus the head) is trained.
    """

    method: str = "none"  # none | lora | dora | adapter | prefix | prompt | ia3 | bitfit
    # LoRA / DoRA
    rank: int = 8  # r of the low-rank update A (in, r) @ B (r, out)
    alpha: float = 16.0  # scale alpha / r (alpha / sqrt(r) with use_rslora)
    dropout: float = 0.0  # dropout on the low-rank path's input while training
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)
    # Regex searched in '/'-joined module paths (e.g. "backbone/h_0/attn/c_attn"); empty: the family's
    # default (LoRA/DoRA: the attention q/k/v projections; IA3: keys, values and the FFN output projection).
    target_modules: str = ""
    feedforward_modules: str = ""  # IA3: targets scaled on their input (FFN out); empty: family default
    # Bottleneck adapters
    adapter_size: int = 64  # bottleneck width
    adapter_placement: str = "houlsby"  # houlsby: after attention and FFN | pfeiffer: after FFN only
    adapter_activation: str = "gelu"  # any mgpt activation name (relu, gelu, silu, ...)
    # Prompt / prefix tuning
    num_virtual_tokens: int = 20  # learned tokens (prompt) or key/value positions per layer (prefix)
    init_std: float = 0.02  # std of normal initialisers (LoRA A uses 1/sqrt(in); prompts start from vocab rows)
    train_head: bool = True  # keep the task head trainable


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


def load_experiment(path: str | os.PathLike) -> ExperimentConfig:
    """Import an experiment file and return its ``get_config()``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"experiment file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"mgpt_experiment_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: an experiment file must define get_config()")
    config = module.get_config()
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, expected ExperimentConfig")
    return config


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Convert override text into a value of the declared type, or fail naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        if text.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_value(text, inner[0], key)
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key}: expected a bool (true/false), got {text!r}")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an int, got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a float, got {text!r}") from None
    if annotation is str:
        return text
    # Containers: tuples and dicts are written as Python or JSON literals.
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if origin is tuple and args and args[0] is str:  # a,b,c shorthand for a tuple of strings
            return tuple(part.strip() for part in text.split(",") if part.strip())
        raise ConfigError(f"{key}: expected a literal of type {annotation}, got {text!r}") from None
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a tuple, got {text!r}")
        return _to_tuple(value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a dict, got {text!r}")
        return value
    return value


def _to_tuple(value):
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value


def _replace_path(obj: Any, parts: list[str], text: str, full_key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"{full_key}: cannot set a key below a non-config value")
    name = parts[0]
    types_ = _field_types(type(obj))
    if name not in types_:
        valid = ", ".join(sorted(types_))
        prefix = full_key[: len(full_key) - len(".".join(parts))].rstrip(".") or "<top level>"
        raise ConfigError(f"unknown config key {full_key!r}: valid keys under {prefix} are: {valid}")
    current = getattr(obj, name)
    if len(parts) == 1:
        new = _parse_value(text, types_[name], full_key)
    elif isinstance(current, dict):  # optimizer.kwargs.b1=0.9
        new = dict(current)
        try:
            new[".".join(parts[1:])] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            new[".".join(parts[1:])] = text
    else:
        new = _replace_path(current, parts[1:], text, full_key)
    return dataclasses.replace(obj, **{name: new})


def apply_overrides(config: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """Apply ``a.b=value`` overrides, each checked against the declared type."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optimizer.learning_rate=1e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        config = _replace_path(config, key.split("."), text.strip(), key)
    return config


def to_dict(config: Any) -> dict:
    """The config as plain JSON-ready data."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls, data: dict, where: str = ""):
    """Rebuild a config dataclass from :func:`to_dict` output; unknown keys fail."""
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}: valid keys are {sorted(types_)}"
        )
    kwargs = {}
    for name, value in data.items():
        annotation = types_[name]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            kwargs[name] = from_dict(annotation, value, f"{where}.{name}".lstrip("."))
        elif typing.get_origin(annotation) is tuple:
            kwargs[name] = _to_tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as JSON."""
    with open(path, "w") as f:
        json.dump(to_dict(config), f, indent=2, sort_keys=True)
