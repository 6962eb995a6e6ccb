"""Hugging Face checkpoint I/O: config, safetensors weights and tokenizer in; config, safetensors and tokenizer out.

One explicit mapping table per family (:func:`mapping_table`) says, for every transformers tensor name (without
the base-model prefix ``transformer.``/``bert.``), which mgpt parameter it fills and whether it is transposed
(PyTorch ``nn.Linear`` weights are ``(out, in)``; GPT-2's ``Conv1D`` weights are already ``(in, out)``).
Loading reads it forwards; :func:`save_pretrained` reads the same table backwards.

Pickled weights (``*.bin``, ``*.pt``) are never opened.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import struct
import zlib
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes  # ships with jax; numpy itself has no bfloat16
import numpy as np
from flax import traverse_util

from mgpt.models.heads import ModelSpec, TaskModel, build_model, make_spec

logger = logging.getLogger("mgpt")

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
BASE_PREFIX = {"gpt2": "transformer.", "bert": "bert."}
# Files fetched from the Hub: config, safetensors weights and tokenizer files only (never pickles).
HUB_ALLOW_PATTERNS = [
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    INDEX_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# transformers class written into config.json's "architectures" by save_pretrained.
_ARCHITECTURES = {
    ("gpt2", "causal_lm"): "GPT2LMHeadModel",
    ("gpt2", "sequence_classification"): "GPT2ForSequenceClassification",
    ("gpt2", "regression"): "GPT2ForSequenceClassification",
    ("gpt2", "token_classification"): "GPT2ForTokenClassification",
    ("bert", "sequence_classification"): "BertForSequenceClassification",
    ("bert", "regression"): "BertForSequenceClassification",
    ("bert", "token_classification"): "BertForTokenClassification",
}
# Checkpoint tensors that are known and deliberately not used, with the reason (matched after the
# prefix is stripped, and only when the name is not in the mapping table for the requested task).
_IGNORED = {
    "gpt2": [
        (r"h\.\d+\.attn\.(bias|masked_bias)", "causal-mask buffer"),
        (r"h\.\d+\.crossattention\.(bias|masked_bias)", "causal-mask buffer"),
        (r"lm_head\.weight", "LM head tied to wte"),
        (r"score\.weight", "head of another task"),
        (r"classifier\.(weight|bias)", "head of another task"),
        (r"multiple_choice_head\..*", "head of another task"),
        (r"qa_outputs\.(weight|bias)", "head of another task"),
    ],
    "bert": [
        (r"embeddings\.(position_ids|token_type_ids)", "index buffer"),
        (r"cls\..*", "pretraining (MLM/NSP) head"),
        (r"pooler\.dense\.(weight|bias)", "pooler not used by this task"),
        (r"classifier\.(weight|bias)", "head of another task"),
        (r"qa_outputs\.(weight|bias)", "head of another task"),
    ],
}


class CheckpointError(ValueError):
    """A checkpoint directory, file or tensor is missing, unexpected or malformed; the message names it."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a mapping table: the mgpt parameter path, the transpose flag and the tensor's role.

    role: "backbone" (must be in the checkpoint), "optional" (pretrained part that is initialised when
    absent, e.g. BERT's pooler) or "head" (loaded when the checkpoint has this task's head, else initialised).
    """

    path: tuple[str, ...]
    transpose: bool
    role: str


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did with the checkpoint (also logged to the "mgpt" logger)."""

    directory: str
    files: tuple[str, ...]
    loaded_head: tuple[str, ...]  # checkpoint names of head tensors that were loaded
    initialized: tuple[str, ...]  # mgpt param paths ("head/score/kernel") freshly initialised
    ignored: tuple[str, ...]  # "name (reason)" for checkpoint tensors deliberately not used
    head_note: str = ""  # why the head was initialised, when it was

    @property
    def head_loaded(self) -> bool:
        return bool(self.loaded_head)


# ----------------------------------------------------------------------------------------------- mapping tables


def _add(table: dict, hf: str, path: tuple, kind: str, role: str = "backbone", bias: bool = True) -> None:
    """Expand one HF module into its weight/bias rows."""
    if kind == "embedding":
        table[f"{hf}.weight"] = Entry(path + ("embedding",), False, role)
        return
    if kind == "layernorm":
        table[f"{hf}.weight"] = Entry(path + ("scale",), False, role)
    elif kind == "linear":  # torch nn.Linear: (out, in) -> kernel (in, out)
        table[f"{hf}.weight"] = Entry(path + ("kernel",), True, role)
    elif kind == "conv1d":  # GPT-2 Conv1D: already (in, out)
        table[f"{hf}.weight"] = Entry(path + ("kernel",), False, role)
    else:
        raise ValueError(kind)
    if bias:
        table[f"{hf}.bias"] = Entry(path + ("bias",), False, role)


def _gpt2_table(spec: ModelSpec) -> dict[str, Entry]:
    t: dict[str, Entry] = {}
    b = ("backbone",)
    _add(t, "wte", b + ("wte",), "embedding")
    _add(t, "wpe", b + ("wpe",), "embedding")
    for i in range(spec.arch.n_layer):
        h = b + (f"h_{i}",)
        _add(t, f"h.{i}.ln_1", h + ("ln_1",), "layernorm")
        _add(t, f"h.{i}.attn.c_attn", h + ("attn", "c_attn"), "conv1d")
        _add(t, f"h.{i}.attn.c_proj", h + ("attn", "c_proj"), "conv1d")
        _add(t, f"h.{i}.ln_2", h + ("ln_2",), "layernorm")
        _add(t, f"h.{i}.mlp.c_fc", h + ("mlp", "c_fc"), "conv1d")
        _add(t, f"h.{i}.mlp.c_proj", h + ("mlp", "c_proj"), "conv1d")
    _add(t, "ln_f", b + ("ln_f",), "layernorm")
    if spec.task in ("sequence_classification", "regression"):
        _add(t, "score", ("head", "score"), "linear", role="head", bias=False)
    elif spec.task == "token_classification":
        _add(t, "classifier", ("head", "classifier"), "linear", role="head")
    return t


def _bert_table(spec: ModelSpec) -> dict[str, Entry]:
    t: dict[str, Entry] = {}
    e = ("backbone", "embeddings")
    _add(t, "embeddings.word_embeddings", e + ("word_embeddings",), "embedding")
    _add(t, "embeddings.position_embeddings", e + ("position_embeddings",), "embedding")
    _add(t, "embeddings.token_type_embeddings", e + ("token_type_embeddings",), "embedding")
    _add(t, "embeddings.LayerNorm", e + ("LayerNorm",), "layernorm")
    for i in range(spec.arch.num_layers):
        hf = f"encoder.layer.{i}"
        p = ("backbone", "encoder", f"layer_{i}")
        for name in ("query", "key", "value"):
            _add(t, f"{hf}.attention.self.{name}", p + ("attention", "self", name), "linear")
        _add(t, f"{hf}.attention.output.dense", p + ("attention", "output", "dense"), "linear")
        _add(t, f"{hf}.attention.output.LayerNorm", p + ("attention", "output", "LayerNorm"), "layernorm")
        _add(t, f"{hf}.intermediate.dense", p + ("intermediate", "dense"), "linear")
        _add(t, f"{hf}.output.dense", p + ("output", "dense"), "linear")
        _add(t, f"{hf}.output.LayerNorm", p + ("output", "LayerNorm"), "layernorm")
    if spec.uses_pooler:
        _add(t, "pooler.dense", ("backbone", "pooler", "dense"), "linear", role="optional")
    if spec.task != "causal_lm":
        _add(t, "classifier", ("head", "classifier"), "linear", role="head")
    return t


def mapping_table(spec: ModelSpec) -> dict[str, Entry]:
    """HF tensor name (no base prefix) -> :class:`Entry`, for this family, size and task."""
    if spec.family == "gpt2":
        return _gpt2_table(spec)
    if spec.family == "bert":
        return _bert_table(spec)
    raise ValueError(f"no mapping table for family {spec.family!r}")


def _normalize_name(name: str, family: str) -> str:
    """Strip the base-model prefix and map legacy TF names (LayerNorm.gamma/beta)."""
    prefix = BASE_PREFIX[family]
    if name.startswith(prefix):
        name = name[len(prefix) :]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def _ignore_reason(name: str, family: str) -> Optional[str]:
    for pattern, reason in _IGNORED[family]:
        if re.fullmatch(pattern, name):
            return reason
    return None


# ----------------------------------------------------------------------------------------- locating checkpoints


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_checkpoint_dir(name_or_path: str | os.PathLike) -> str:
    """A local directory as is; a Hub id is downloaded (config, safetensors, tokenizer files only) when online."""
    text = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(text):
        return text
    if os.path.exists(text):
        raise CheckpointError(f"{text} is a file; pass the checkpoint directory that holds config.json")
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or not text
    if looks_like_path:
        raise CheckpointError(f"checkpoint directory not found: {text!r}")
    hint = "pass a local directory holding config.json, model.safetensors and the tokenizer files"
    if _offline():
        raise CheckpointError(f"{text!r} is not a local directory and HF_HUB_OFFLINE=1 forbids downloading it; {hint}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=text, allow_patterns=HUB_ALLOW_PATTERNS)
    except Exception as exc:  # network, auth, missing repo: all end the same way
        raise CheckpointError(
            f"could not download {text!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}); {hint}"
        ) from exc


def checkpoint_files(directory: str) -> dict[str, str]:
    """Tensor name -> safetensors file, from ``model.safetensors`` or a sharded ``model.safetensors.index.json``."""
    from safetensors import safe_open

    single = os.path.join(directory, SINGLE_FILE)
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(single):
        with safe_open(single, framework="numpy") as f:
            return {name: single for name in f.keys()}
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({exc})") from exc
        files = {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
        absent = sorted({p for p in files.values() if not os.path.isfile(p)})
        if absent:
            raise CheckpointError(f"{index} lists shard file(s) that do not exist: {absent}")
        return files
    pickles = sorted(n for n in os.listdir(directory) if n.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"{directory} has only pickled weights {pickles}; mgpt never unpickles. Convert them to safetensors, "
            "e.g. in PyTorch: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"
        )
    present = sorted(os.listdir(directory))
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found (files: {present})")


_RAW_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64}


def _read_raw(path: str, name: str) -> np.ndarray:
    """Read one tensor straight from the safetensors layout (for dtypes numpy lacks, e.g. bfloat16)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        info = header[name]
        start, end = info["data_offsets"]
        f.seek(8 + header_len + start)
        data = f.read(end - start)
    dtype = _RAW_DTYPES.get(info["dtype"])
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    return np.frombuffer(data, dtype=dtype).reshape(info["shape"])


def _tensor_shapes(files: dict[str, str]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for path in sorted(set(files.values())):
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _read_tensors(files: dict[str, str], names: Sequence[str]):
    """Yield ``(name, float32 array)`` one tensor at a time, one file open at a time."""
    from safetensors import safe_open

    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    for path, wanted in by_file.items():
        with safe_open(path, framework="numpy") as f:
            for name in wanted:
                try:
                    array = f.get_tensor(name)
                except TypeError:  # numpy has no bfloat16
                    array = _read_raw(path, name)
                yield name, np.asarray(array, dtype=np.float32)


# --------------------------------------------------------------------------------------------------- loading


def _init_value(path: tuple[str, ...], shape, std: float, seed: int) -> jax.Array:
    """Fresh values for a parameter the checkpoint does not provide: normal(std) weights, zero bias, unit scale."""
    leaf = path[-1]
    if leaf == "bias":
        return jnp.zeros(shape, jnp.float32)
    if leaf == "scale":
        return jnp.ones(shape, jnp.float32)
    # A stable per-path key, so a parameter's initial value does not depend on which others exist.
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32("/".join(path).encode()) & 0x7FFFFFFF)
    return std * jax.random.normal(key, shape, jnp.float32)


def abstract_params(model: TaskModel) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every parameter path of the model and its shape, without allocating anything."""
    ids = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, attention_mask=jnp.ones_like(ids)))
    return {path: tuple(x.shape) for path, x in traverse_util.flatten_dict(variables["params"]).items()}


def _checkpoint_head_task(hf_config) -> Optional[str]:
    """Which task head the checkpoint's architecture carries, when config.json says so."""
    for name in getattr(hf_config, "architectures", None) or []:
        if name.endswith("ForSequenceClassification"):
            return "sequence"
        if name.endswith("ForTokenClassification"):
            return "token"
        if name.endswith(("LMHeadModel", "ForCausalLM", "Model", "ForMaskedLM", "ForPreTraining")):
            return "none"
    return None


def load_params(directory: str, spec: ModelSpec, seed: int = 0) -> tuple[dict, LoadReport]:
    """Read the checkpoint into mgpt's param tree, checking every name and shape; see the module docstring."""
    files = checkpoint_files(directory)
    shapes = _tensor_shapes(files)
    table = mapping_table(spec)
    family, task = spec.family, spec.task

    mapped: dict[str, str] = {}  # table name -> checkpoint name
    ignored: list[str] = []
    unknown: list[str] = []
    for ckpt_name in sorted(files):
        name = _normalize_name(ckpt_name, family)
        if name in table:
            if name in mapped:
                raise CheckpointError(f"{directory}: tensors {mapped[name]!r} and {ckpt_name!r} both map to {name!r}")
            mapped[name] = ckpt_name
            continue
        reason = _ignore_reason(name, family)
        if reason is None:
            unknown.append(ckpt_name)
        else:
            ignored.append(f"{ckpt_name} ({reason})")
    if unknown:
        raise CheckpointError(
            f"{directory}: unexpected tensor(s) for a {family} {task} model: {unknown}. "
            "The checkpoint does not match mgpt's mapping table (wrong model_type in config.json, or a modified model)."
        )
    missing = [BASE_PREFIX[family] + n for n, e in table.items() if e.role == "backbone" and n not in mapped]
    if missing:
        raise CheckpointError(f"{directory}: missing backbone tensor(s): {missing}")

    expected = abstract_params(build_model(spec))

    def fits(name: str) -> bool:
        entry = table[name]
        shape = shapes[mapped[name]]
        return (shape[::-1] if entry.transpose else shape) == expected[entry.path]

    # Backbone and pooler shapes must match exactly.
    for name, entry in table.items():
        if entry.role != "head" and name in mapped and not fits(name):
            raise CheckpointError(
                f"{directory}: tensor {mapped[name]!r} has shape {shapes[mapped[name]]}"
                f"{' (transposed on load)' if entry.transpose else ''}; mgpt parameter {'/'.join(entry.path)} "
                f"of this config needs {expected[entry.path]}"
            )

    # The head loads only when the checkpoint has this task's complete head with matching shapes.
    head_names = [n for n, e in table.items() if e.role == "head"]
    head_note = ""
    ckpt_task = _checkpoint_head_task(spec.hf_config)
    wanted_kind = "token" if task == "token_classification" else "sequence"
    if head_names:
        present = [n for n in head_names if n in mapped]
        if not present:
            head_note = "checkpoint has no head for this task"
        elif len(present) < len(head_names):
            head_note = f"checkpoint head is incomplete (has {present}, needs {head_names})"
        elif ckpt_task not in (None, wanted_kind):
            head_note = f"checkpoint head belongs to {spec.hf_config.architectures}, not to {task}"
        elif not all(fits(n) for n in head_names):
            got = {mapped[n]: shapes[mapped[n]] for n in head_names}
            head_note = f"checkpoint head shapes {got} do not fit num_labels={spec.num_labels}"
        if head_note:
            for n in present:
                ignored.append(f"{mapped[n]} (head not loaded: {head_note})")
                del mapped[n]

    loaded_head = tuple(sorted(mapped[n] for n in head_names if n in mapped))
    flat: dict[tuple[str, ...], jax.Array] = {}
    path_of = {ckpt: table[name] for name, ckpt in mapped.items()}
    for ckpt_name, array in _read_tensors(files, list(mapped.values())):
        entry = path_of[ckpt_name]
        if entry.transpose:
            array = array.T
        flat[entry.path] = jnp.asarray(np.ascontiguousarray(array))
    initialized = []
    for path, shape in expected.items():
        if path not in flat:
            if path[0] != "head" and path != ("backbone", "pooler", "dense", path[-1]):
                raise CheckpointError(f"internal: mgpt parameter {'/'.join(path)} has no checkpoint tensor")
            flat[path] = _init_value(path, shape, spec.arch.initializer_range, seed)
            initialized.append("/".join(path))

    report = LoadReport(
        directory=str(directory),
        files=tuple(sorted({os.path.basename(p) for p in files.values()})),
        loaded_head=loaded_head,
        initialized=tuple(sorted(initialized)),
        ignored=tuple(ignored),
        head_note=head_note,
    )
    _log_report(report, spec)
    return traverse_util.unflatten_dict(flat), report


def _log_report(report: LoadReport, spec: ModelSpec) -> None:
    where = f"{report.directory} ({spec.family}, {spec.task})"
    if report.loaded_head:
        logger.info("%s: head tensors loaded from the checkpoint: %s", where, list(report.loaded_head))
    if report.initialized:
        note = f" ({report.head_note})" if report.head_note else ""
        logger.info("%s: parameters initialised (not loaded)%s: %s", where, note, list(report.initialized))
    if report.ignored:
        logger.info("%s: checkpoint tensors ignored: %s", where, list(report.ignored))


def load_tokenizer(name_or_path: str | os.PathLike):
    """The checkpoint's fast tokenizer, right padding, pad token = eos when it has none (GPT-2).

    Accepts the same local directory or Hub id as :func:`load_pretrained`.
    """
    from transformers import AutoTokenizer

    directory = resolve_checkpoint_dir(name_or_path)

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:
        raise CheckpointError(f"{directory}: could not load a tokenizer ({type(exc).__name__}: {exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        got = type(tokenizer).__name__
        raise CheckpointError(f"{directory}: mgpt needs a fast tokenizer (tokenizer.json); got {got}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CheckpointError(f"{directory}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_pretrained(
    name_or_path: str | os.PathLike,
    task: str = "causal_lm",
    num_labels: Optional[int] = None,
    dtype: str = "float32",
    dropout: Optional[float] = None,
    seed: int = 0,
):
    """Load a transformers checkpoint as ``(model, params, spec, tokenizer)``.

    ``params`` are float32 (master weights) whatever ``dtype`` (the computation dtype) is; ``spec.load_report``
    says which head tensors were loaded and which initialised (normal(initializer_range), bias 0, seeded).
    """
    from transformers import AutoConfig

    directory = resolve_checkpoint_dir(name_or_path)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{directory}: no config.json")
    hf_config = AutoConfig.from_pretrained(directory)
    spec = make_spec(hf_config, task, num_labels, dtype, dropout, os.fspath(name_or_path))
    params, report = load_params(directory, spec, seed)
    spec = dataclasses.replace(spec, load_report=report)
    return build_model(spec), params, spec, load_tokenizer(directory)


# ---------------------------------------------------------------------------------------------------- saving


def hf_state_dict(spec: ModelSpec, params: dict) -> dict[str, np.ndarray]:
    """mgpt params -> transformers tensors (names as the task's *For<Task> model expects), via the mapping table."""
    table = mapping_table(spec)
    by_path = {entry.path: (name, entry) for name, entry in table.items()}
    flat = traverse_util.flatten_dict(params)
    extra = sorted("/".join(p) for p in flat if p not in by_path)
    if extra:
        raise CheckpointError(f"save_pretrained: parameters with no transformers name: {extra}")
    absent = sorted(name for name, e in table.items() if e.path not in flat)
    if absent:
        raise CheckpointError(f"save_pretrained: params lack tensors for: {absent}")
    prefix = BASE_PREFIX[spec.family]
    tensors = {}
    for path, value in flat.items():
        name, entry = by_path[path]
        array = np.asarray(jax.device_get(value), dtype=np.float32)
        if entry.transpose:
            array = array.T
        tensors[name if entry.role == "head" else prefix + name] = np.ascontiguousarray(array)
    return tensors


def save_pretrained(
    out_dir: str | os.PathLike,
    model_or_spec: Any,
    params: dict,
    tokenizer=None,
    label_names: Optional[Sequence[str]] = None,
) -> str:
    """Write ``config.json``, ``model.safetensors`` (transformers names) and the tokenizer files.

    The result loads with transformers' ``AutoModelFor<Task>`` (SequenceClassification, TokenClassification,
    CausalLM) and gives the same logits. ``label_names`` become ``id2label``/``label2id``.
    """
    from safetensors.numpy import save_file

    spec: ModelSpec = getattr(model_or_spec, "spec", model_or_spec)
    if (spec.family, spec.task) not in _ARCHITECTURES:
        raise ValueError(f"save_pretrained: no transformers class for {spec.family} {spec.task}")
    out_dir = os.fspath(out_dir)
    tensors = hf_state_dict(spec, params)
    os.makedirs(out_dir, exist_ok=True)

    config = copy.deepcopy(spec.hf_config)
    config.architectures = [_ARCHITECTURES[(spec.family, spec.task)]]
    if spec.task != "causal_lm":
        config.num_labels = spec.num_labels
        if label_names is not None:
            if len(label_names) != spec.num_labels:
                raise ValueError(f"save_pretrained: {len(label_names)} label names for num_labels={spec.num_labels}")
            config.id2label = {i: str(n) for i, n in enumerate(label_names)}
            config.label2id = {str(n): i for i, n in enumerate(label_names)}
        config.problem_type = "regression" if spec.task == "regression" else None
    if spec.family == "gpt2" and spec.task in ("sequence_classification", "regression") and config.pad_token_id is None:
        # GPT2ForSequenceClassification needs a pad id to find the last real token.
        config.pad_token_id = tokenizer.pad_token_id if tokenizer is not None else config.eos_token_id
    config.save_pretrained(out_dir)
    save_file(tensors, os.path.join(out_dir, SINGLE_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    logger.info("saved %s %s model (%d tensors) to %s", spec.family, spec.task, len(tensors), out_dir)
    return out_dir
