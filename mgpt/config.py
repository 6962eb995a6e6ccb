"""Typed, frozen configuration for an mgpt experiment, validated by pydantic.

An experiment is a Python file with ``get_config()`` returning :class:`ExperimentConfig`; ``--set a.b=value``
overrides set one field each. Fields declare what they allow: enumerations as ``Literal`` types, bounds
with ``Annotated`` (``annotated_types``: ``Ge``, ``Gt``, ...). Every config that enters mgpt (an experiment
file, overrides, a workdir's ``config.json``) is checked whole by ``pydantic.TypeAdapter`` and a failure is a
:class:`ConfigError` of one line naming the key, the value and what is allowed. Rules that span sections
(task x data format, ``train.best_metric``, optimizer keywords) need the tasks and Optax, which sit above
this module: they are in :mod:`mgpt.train.validate`.

Why pydantic: it validates the stdlib dataclasses the experiment files already build (no new base class,
no second schema), reads ``Literal`` / ``Annotated`` constraints from the field types, coerces only what is
safe (``"8"`` -> 8, a list -> a tuple; ``"0.9x"`` is refused) and reports errors with their location, and it
is already installed with transformers. tyro and draccus parse a whole command line into dataclasses and
would replace ``--set a.b=value`` and the experiment-file workflow rather than check it; ml_collections
brings untyped ``ConfigDict`` values and its own override flags. The override grammar (Python literals,
then YAML flow such as ``[neg,pos]``) is in :mod:`mgpt.config_parse`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ConfigDict, Strict, with_config

from mgpt import config_parse
from mgpt.config_parse import ConfigError  # noqa: F401  (re-exported: mgpt.config.ConfigError)

# Strict: no bool is taken for a number, no float with a fraction for an int, no text for either.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an int is a float too
Bool = Annotated[bool, Strict()]  # --set accepts true/false, yes/no, on/off, 1/0 (mgpt.config_parse)
PositiveInt = Annotated[Int, Ge(1)]
NonNegativeInt = Annotated[Int, Ge(0)]
NonNegativeFloat = Annotated[Float, Ge(0)]
Ratio = Annotated[Float, Ge(0), Lt(1)]  # in [0, 1): split and warmup ratios, dropout rates
TaskKind = Literal["sequence_classification", "multi_label_classification", "token_classification", "regression",
                   "causal_lm", "generation"]
DataFormat = Literal["csv", "tsv", "jsonl", "conll", "tfds", "lines", "parallel", "chat"]
SplitName = Literal["train", "validation", "test", "predict"]  # predict: the file `mgpt predict` labels


def _section(cls):
    """A frozen dataclass whose unknown keys pydantic rejects."""
    return with_config(ConfigDict(extra="forbid"))(dataclass(frozen=True)(cls))


@_section
class ModelConfig:
    """Which pretrained checkpoint to start from and how to run it."""

    name_or_path: str = ""  # a local Hugging Face directory, or a hub id when online
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # compute dtype
    dropout: Optional[Ratio] = None  # override the checkpoint's dropout rates when set
    # Memory and speed (they change how the model runs, not what it computes):
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "none"  # recompute layers in the backward pass
    scan_layers: Bool = False  # GPT-2 / Llama family: one nn.scan over the layers (params stacked per layer)
    # "" or xla: XLA's attention; cudnn: cuDNN flash attention on NVIDIA GPUs (bf16/fp16, no attention dropout)
    attention_impl: Literal["", "xla", "cudnn"] = ""


@_section
class DataConfig:
    """Where the examples come from and how they become token arrays."""

    # lines: text@label per line; parallel: a file pair such as dir/train.de + dir/train.en, named dir/train.de->en;
    # chat: JSONL conversations rendered with the tokenizer's chat template, loss on the assistant turns only
    format: DataFormat = "csv"
    train_file: str = ""
    validation_file: str = ""
    test_file: str = ""
    predict_file: str = ""  # set by `mgpt predict`: examples to label; labels in it are optional
    text_column: str = "text"
    line_separator: str = "@"  # format=lines: the label follows the last separator (Financial PhraseBank)
    line_encoding: str = "latin-1"  # format=lines: file encoding (the PhraseBank files are latin-1)
    encoding: str = "utf-8"  # text encoding of the data files of every other format
    tsv_quoting: Bool = False  # TSV: read double quotes as CSV quoting (off: a quote is an ordinary character)
    text_pair_column: str = ""  # second segment for sentence-pair tasks; empty for none
    label_column: str = "label"
    conll_token_column: Int = 0  # CoNLL: which whitespace-separated column holds the word
    conll_label_column: Int = -1  # CoNLL: which column holds the tag (negative counts from the end)
    labels: tuple[str, ...] = ()  # fixed label order; empty means sorted labels seen in training
    max_length: PositiveInt = 128  # tokens per example; longer inputs are truncated with a warning
    # Batch shapes. "buckets": each batch is cut to the smallest of data.bucket_lengths that holds its longest row
    # (one compiled program per length; evaluation batches go longest first, reports stay in file order);
    # "max_length": every batch is data.max_length long (one program).
    padding: Literal["buckets", "max_length"] = "buckets"
    bucket_lengths: tuple[PositiveInt, ...] = ()  # empty: 8, 12, 16, 24, 32, 48, 64, 96, ... then max_length
    group_by_length: Bool = False  # training: sort each window of data.group_window batches by length
    group_window: PositiveInt = 50  # batches per sorted window (transformers' group_by_length uses 50)
    label_all_subwords: Bool = False  # token classification: label every sub-word, not only the first
    # token classification: > 0 reads long documents as windows overlapping by ~stride tokens
    stride: NonNegativeInt = 0
    # Multi-label classification: labels in a file are "a|b" (split on this) or a JSON list.
    label_delimiter: str = "|"
    # TensorFlow Datasets (format="tfds"): text_column / text_pair_column / label_column name its features.
    tfds_name: str = ""  # e.g. "glue/sst2", "conll2003", "cnn_dailymail", "wmt14_translate/de-en"
    tfds_data_dir: str = ""  # where the data set is prepared; empty: TFDS's default (TFDS_DATA_DIR)
    # our split -> TFDS split, e.g. {"train": "train[:90%]"}
    tfds_splits: dict[SplitName, str] = field(default_factory=dict)
    # Cleaning (counts by reason go to <workdir>/cleaning.json). Defaults change nothing.
    normalize_text: Bool = False  # Unicode NFKC, runs of spaces -> one space, runs with a newline -> "\n"
    drop_empty: Bool = False  # drop examples whose text (or pair, or target) is empty
    drop_duplicates: Bool = False  # drop repeats of an earlier example's input within a split
    min_words: NonNegativeInt = 0  # drop examples with fewer words (whitespace-separated); 0: no limit
    max_words: NonNegativeInt = 0  # drop examples with more words; 0: no limit
    min_chars: NonNegativeInt = 0  # drop examples with fewer characters; 0: no limit
    max_chars: NonNegativeInt = 0  # drop examples with more characters; 0: no limit
    label_map: dict[str, str] = field(default_factory=dict)  # rename labels/tags, e.g. {"0": "neg"}; to "" drops it
    # Splitting one source: fractions of train carved out when that split has no file / TFDS split.
    validation_ratio: Ratio = 0.0
    test_ratio: Ratio = 0.0
    split_seed: Int = 0
    stratify: Bool = True  # single-label classification: keep label proportions in every split
    # Train source: keep a seeded (data.split_seed) sample of this many examples, stratified like the splits,
    # after cleaning and before validation_ratio / test_ratio carve splits out of it; 0: every example.
    max_examples: NonNegativeInt = 0
    # Causal LM: prompt from example fields, e.g. "Question: {question}\nAnswer:"; only the target is scored.
    prompt_template: str = ""
    target_column: str = ""  # the field holding the completion (takes the place of text_pair_column)
    pack: Bool = False  # pack training examples into full rows (segment ids; per-segment labels and pooling)
    # format=chat: the field holding each record's [{"role", "content"}, ...] list (OpenAI / TRL conversational)
    messages_column: str = "messages"
    # Causal LM / generation from prompt_template + target_column: the rendered prompt becomes the user turn (after
    # system_prompt, when set) and the target the assistant turn, through the tokenizer's chat template (an
    # instruct model sees its own format); the loss covers the assistant turn, long prompts are shortened first.
    use_chat_template: Bool = False
    system_prompt: str = ""  # with use_chat_template: the system turn before every prompt
    # Training-time augmentation (mgpt.data.augment), "op:rate" each, applied on the fly, seeded by (train.seed, step,
    # example) so a resumed run sees the same augmented batches. Text ops: swap, delete, insert, synonym (needs
    # data.synonyms_file), char (keyboard typos: substitution, deletion, insertion, transposition); token
    # classification: label_replace, mention_replace, segment_shuffle (tags stay aligned). Embedding ops, in the
    # train step: token_cutoff, span_cutoff (see robust.cutoff_consistency).
    augment: tuple[str, ...] = ()
    # Each training example is augmented at a step with this probability and otherwise seen as it is (EDA trains
    # on the originals beside their augmented copies); the draw is seeded like the ops, by (seed, step, example).
    augment_probability: Annotated[Float, Gt(0), Le(1)] = 1.0
    synonyms_file: str = ""  # one line per group: words that may replace each other, separated by spaces or commas


@_section
class TaskConfig:
    """The task head and its loss."""

    # generation: causal-LM training on the target, evaluated by decoding from each prompt (mgpt.tasks.generation)
    kind: TaskKind = "sequence_classification"
    num_labels: NonNegativeInt = 0  # 0 means: the number of labels found in the data
    # Generation: metrics of the decoded text against data.target_column, any of rouge (rouge1/2/L, rouge-score),
    # bleu, chrf (sacrebleu), exact_match, token_f1 (SQuAD normalisation). Loss and perplexity are always reported.
    generation_metrics: tuple[Literal["rouge", "bleu", "chrf", "exact_match", "token_f1"], ...] = ("rouge",)
    max_new_tokens: PositiveInt = 32  # generation: tokens decoded per example (stops earlier at the tokenizer's EOS)
    temperature: NonNegativeFloat = 0.0  # generation: 0 is greedy; > 0 samples from softmax(logits / temperature)
    top_k: NonNegativeInt = 0  # generation: sample among the k most likely tokens; 0: no limit
    # generation: nucleus sampling, the smallest most-likely set with this mass; 1: off
    top_p: Annotated[Float, Gt(0), Le(1)] = 1.0
    decode_seed: Int = 0  # generation: seed of the sampling
    # causal_lm: compute the loss over this many positions at a time, never holding the whole
    # (batch, length, vocab) logits (nor their gradient); 0: off
    loss_chunk_size: NonNegativeInt = 0
    # classification and tagging: cross-entropy against optax.smooth_labels(one_hot, label_smoothing); 0: off
    label_smoothing: Ratio = 0.0


@_section
class OptimizerConfig:
    """Any Optax optimizer by name, plus schedule, clipping, decay and accumulation."""

    name: str = "adamw"  # any optax optimizer factory: adamw, adam, sgd, lion, adafactor, lamb, rmsprop, ...
    learning_rate: NonNegativeFloat = 5e-5
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the factory
    schedule: Literal["constant", "linear", "cosine"] = "linear"  # each after warmup
    warmup_steps: NonNegativeInt = 0
    warmup_ratio: Ratio = 0.0  # used when warmup_steps is 0
    # linear / cosine decay end value, relative to the peak
    end_learning_rate_ratio: Annotated[Float, Ge(0), Le(1)] = 0.0
    weight_decay: NonNegativeFloat = 0.0
    decay_biases_and_norms: Bool = False  # by default biases, norm scales and embeddings' norms are not decayed
    max_grad_norm: NonNegativeFloat = 1.0  # global-norm clipping; 0 disables
    accumulation_steps: PositiveInt = 1  # micro-batches per update; the batch is split, the update is exact
    trainable: str = "all"  # all | head | regex over parameter paths (see mgpt.optim)
    # Fine-tuning regularizers (mgpt.optim). Layer-wise learning-rate decay: layer i of L trains at
    # lr * layer_lr_decay ** (L - i), the embeddings at lr * layer_lr_decay ** (L + 1), the head at lr; 1: off.
    layer_lr_decay: Annotated[Float, Gt(0), Le(1)] = 1.0
    # L2-SP: decoupled decay toward the pretrained weights (not zero) at this rate, backbone only; 0: off
    l2_sp: NonNegativeFloat = 0.0
    # Exponential moving average of the weights (kept in the optimizer state); 0: off. See train.eval_ema.
    ema_decay: Ratio = 0.0
    # Warm the average up: update t uses min(ema_decay, (1 + t) / (10 + t)) (TensorFlow's num_updates rule), so a
    # short run's average is not made mostly of the starting weights and the untrained head.
    ema_warmup: Bool = False


@_section
class TrainConfig:
    """The loop: how long, how often to log and evaluate, when to stop."""

    seed: Int = 0
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 64
    num_epochs: Annotated[Float, Gt(0)] = 3.0
    max_steps: NonNegativeInt = 0  # overrides num_epochs when > 0
    log_every: PositiveInt = 10
    eval_every: NonNegativeInt = 0  # 0: evaluate at the end of each epoch
    eval_splits: tuple[SplitName, ...] = ("validation",)  # evaluated during training
    # Evaluated with the best (or last) params; with this default, the splits the data lacks are skipped.
    final_eval_splits: tuple[SplitName, ...] = ("validation", "test")
    best_metric: str = ""  # e.g. "validation/accuracy"; empty: the task's default
    best_mode: Literal["max", "min"] = "max"
    early_stopping_patience: NonNegativeInt = 0  # evaluations without improvement before stopping; 0 disables
    progress_bar: Bool = True
    compilation_cache_dir: str = ""  # persistent XLA compilation cache shared by runs; "" disables it
    # A step whose loss or gradients are not finite is skipped (the state stays as it was) and counted; this
    # many in a row stop the run with an error.
    max_nonfinite_steps: PositiveInt = 10
    # What a resume may find changed since the checkpoint (else it refuses): "model", "data", "labels",
    # "batch_size", "schedule" (epochs, steps, optimizer and its schedule), or "all".
    allow_resume_changes: tuple[str, ...] = ()
    # With optimizer.ema_decay > 0: evaluate, pick the best and export with the EMA weights (off: the live ones).
    eval_ema: Bool = True
    # Robustness evaluation: each evaluated split is also scored on a perturbed copy per "op:rate" (the ops of
    # data.augment, e.g. "char:0.05", "delete:0.1"), same seed every time; clean, perturbed and drop are reported.
    eval_perturbations: tuple[str, ...] = ()


@_section
class ParallelConfig:
    """Device mesh and how arrays are laid out on it."""

    mesh: tuple[tuple[str, Int], ...] = (("data", -1),)  # -1 takes the remaining devices
    num_devices: NonNegativeInt = 0  # 0: all visible devices; otherwise the first N
    mode: Literal["jit", "pmap"] = "jit"  # jit: one program over the mesh | pmap: plain data parallelism with jax.pmap
    # How params / optimizer state / activations map onto the mesh (mode=jit): dp | fsdp | tp | fsdp_tp
    # (sets joined by "_" or "+"); tp needs a "model" mesh axis, e.g. mesh=(("data", 4), ("model", 2)).
    rules: str = "dp"
    # Explicit (logical axis, mesh axis or None) rules replacing `rules`, e.g. (("batch", "data"), ("embed", "data"))
    logical_rules: tuple[tuple[str, Optional[str]], ...] = ()
    distributed: Bool = False  # multi-host: call jax.distributed.initialize() (auto-detects TPU pods, SLURM, ...)
    coordinator_address: str = ""  # host:port of process 0, when not auto-detected
    num_processes: NonNegativeInt = 0
    process_id: Annotated[Int, Ge(-1)] = -1


@_section
class CheckpointConfig:
    """Orbax checkpointing and retention."""

    enabled: Bool = True
    save_every: NonNegativeInt = 0  # steps; 0: at each evaluation and at the end
    max_to_keep: PositiveInt = 2  # latest checkpoints kept for resuming (0 would keep none to resume from)
    keep_best: Bool = True  # also keep the best checkpoint by train.best_metric
    async_save: Bool = True
    # Save and restore only the trained parameters (PEFT, or optimizer.trainable); the frozen ones are
    # identified by name and checksum in the metadata, and a different base model fails on restore.
    trainable_only: Bool = False


@_section
class PeftConfig:
    """Parameter-efficient fine-tuning (mgpt.peft): which method, and its knobs.

    Every method is a transform of the parameter tree and the forward pass; params become
    ``{"base": <model params>, "peft": <new params>}`` and only ``peft`` (plus the head) is trained.
    """

    method: Literal["none", "lora", "dora", "adapter", "prefix", "prompt", "ia3", "bitfit"] = "none"
    # LoRA / DoRA
    rank: PositiveInt = 8  # r of the low-rank update A (in, r) @ B (r, out)
    alpha: Annotated[Float, Gt(0)] = 16.0  # scale alpha / r (alpha / sqrt(r) with use_rslora)
    dropout: Ratio = 0.0  # dropout on the low-rank path's input while training
    use_rslora: Bool = False  # rank-stabilised scaling alpha / sqrt(r)
    # Regex searched in '/'-joined module paths (e.g. "backbone/h_0/attn/c_attn"); empty: the family's
    # default (LoRA/DoRA: the attention q/k/v projections; IA3: keys, values and the FFN output projection).
    target_modules: str = ""
    feedforward_modules: str = ""  # IA3: targets scaled on their input (FFN out); empty: family default
    # Bottleneck adapters
    adapter_size: PositiveInt = 64  # bottleneck width
    adapter_placement: Literal["houlsby", "pfeiffer"] = "houlsby"  # houlsby: after attention and FFN; pfeiffer: FFN
    adapter_activation: str = "gelu"  # any mgpt activation name (relu, gelu, silu, ...)
    # Prompt / prefix tuning
    num_virtual_tokens: PositiveInt = 20  # learned tokens (prompt) or key/value positions per layer (prefix)
    # std of normal initialisers (LoRA A uses 1/sqrt(in); prompts start from vocab rows)
    init_std: NonNegativeFloat = 0.02
    train_head: Bool = True  # keep the task head trainable


@_section
class RobustConfig:
    """Adversarial training and consistency regularization (mgpt.robust): each a train-step objective.

    Perturbations live on the input embeddings, with L2 norms taken per example over its real tokens
    (padding is never perturbed).
    """

    # fgm: one normalised gradient step (Miyato et al. 2016); pgd: `steps` projected ascent steps (Madry et al.
    # 2018); freelb: parameter gradients averaged over `steps` ascent steps (Zhu et al. 2020); smart: a
    # smoothness-inducing regularizer, symmetric KL between clean and perturbed outputs (Jiang et al. 2020).
    adversarial: Literal["none", "fgm", "pgd", "freelb", "smart"] = "none"
    # Radius of the perturbation ball, L2 per example over its real tokens: one example's whole share, not the
    # whole batch's (implementations that normalise over the batch tensor give each example ~1/sqrt(B) of it).
    # all-MiniLM-L6-v2's word embeddings have norm ~1 per token; 1.0 per example made few-shot Banking77 collapse.
    epsilon: NonNegativeFloat = 0.1
    steps: PositiveInt = 3  # ascent steps (pgd, freelb, smart)
    step_size: NonNegativeFloat = 0.05  # L2 length of each normalised ascent step (pgd, freelb, smart)
    init_std: NonNegativeFloat = 1e-5  # smart: std of the random start (pgd starts at zero, freelb at a random point)
    smart_weight: NonNegativeFloat = 1.0  # smart: weight of the smoothness term
    # smart: weight of the Bregman proximal term (divergence from the outputs of a slow-moving copy of the
    # weights, updated as anchor = m * anchor + (1 - m) * params); 0: off
    smart_bregman_weight: NonNegativeFloat = 0.0
    smart_bregman_momentum: Ratio = 0.99
    # R-Drop (Liang et al. 2021): two dropout passes, mean task loss + rdrop_alpha * symmetric KL; 0: off
    rdrop_alpha: NonNegativeFloat = 0.0
    # token_cutoff / span_cutoff (data.augment): weight of the Jensen-Shannon consistency between the clean and
    # cut-off views (Shen et al. 2020); 0: train on the cut-off view alone
    cutoff_consistency: NonNegativeFloat = 0.0


@_section
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
    robust: RobustConfig = field(default_factory=RobustConfig)


def check(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with every field checked against its declared type and bounds (values coerced where safe)."""
    return config_parse.validated(ExperimentConfig, config_parse.as_plain(config))


def import_experiment(path: str | os.PathLike):
    """The experiment file ``path`` imported as a module (its ``get_config()`` and any hooks it defines)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"experiment file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"mgpt_experiment_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(path: str | os.PathLike) -> ExperimentConfig:
    """Import an experiment file and return its ``get_config()``, each field checked."""
    path = os.fspath(path)
    module = import_experiment(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: an experiment file must define get_config()")
    config = module.get_config()
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, expected ExperimentConfig")
    try:
        return check(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def apply_overrides(config: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """Apply ``a.b=value`` overrides, then check the whole config.

    The value text is parsed as a Python literal, else as YAML flow (``[neg,pos]``, JSON, ``true``,
    ``null``); a field declared ``str`` (or a ``Literal`` of strings) takes the text as written, and a
    tuple of strings also takes ``a,b``. ``optimizer.kwargs.b1=0.9`` sets one entry of a dict field.
    """
    return config_parse.apply_text_overrides(config, overrides)


def to_dict(config: Any) -> dict:
    """The config as plain JSON-ready data."""
    return json.loads(json.dumps(config_parse.as_plain(config)))


def from_dict(cls, data: dict, where: str = ""):
    """Rebuild a config dataclass from :func:`to_dict` output, checked like any other; unknown keys fail."""
    try:
        return config_parse.validated(cls, data)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as JSON."""
    with open(path, "w") as f:
        json.dump(to_dict(config), f, indent=2, sort_keys=True)
