"""One explicit mapping table per family between transformers tensor names and mgpt parameter paths.

:func:`mapping_table` says, for every transformers tensor name (without the base-model prefix such as
``transformer.``/``bert.``/``model.``), which mgpt parameter it fills and whether it is transposed (PyTorch
``nn.Linear`` weights are ``(out, in)``; GPT-2's ``Conv1D`` weights are already ``(in, out)``). Loading reads a
table forwards, export reads the same table backwards, so the two cannot drift apart.

RoBERTa and DistilBERT run on BERT's Flax layers, so their tables map their own names onto BERT's layout.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from mgpt.models.spec import LLAMA_FAMILIES, ModelSpec

BASE_PREFIX = {
    "gpt2": "transformer.",
    "bert": "bert.",
    "roberta": "roberta.",
    "distilbert": "distilbert.",
    **{family: "model." for family in LLAMA_FAMILIES},
}
_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert", "llama": "Llama",
                 "mistral": "Mistral", "qwen2": "Qwen2", "gemma": "Gemma", "qwen3": "Qwen3", "phi3": "Phi3"}
_TASK_SUFFIX = {"sequence_classification": "ForSequenceClassification", "regression": "ForSequenceClassification",
                "token_classification": "ForTokenClassification", "causal_lm": "ForCausalLM"}


def architecture(family: str, task: str) -> Optional[str]:
    """The transformers class written into config.json's ``architectures`` on export, or None if there is none."""
    if family == "gpt2":
        return {"causal_lm": "GPT2LMHeadModel", "token_classification": "GPT2ForTokenClassification"}.get(
            task, "GPT2ForSequenceClassification")
    if task == "causal_lm" and family not in LLAMA_FAMILIES:
        return None
    return _CLASS_PREFIX[family] + _TASK_SUFFIX[task]


_OTHER_HEAD = "head of another task"
# Checkpoint tensors that are known and deliberately not used, with the reason (matched after the prefix is
# stripped, and only when the name is not in the mapping table for the requested task).
_IGNORED = {
    "gpt2": [
        (r"h\.\d+\.attn\.(bias|masked_bias)", "causal-mask buffer"),
        (r"h\.\d+\.crossattention\.(bias|masked_bias)", "causal-mask buffer"),
        (r"lm_head\.weight", "LM head tied to wte"),
        (r"score\.weight", _OTHER_HEAD),
        (r"classifier\.(weight|bias)", _OTHER_HEAD),
        (r"multiple_choice_head\..*", _OTHER_HEAD),
        (r"qa_outputs\.(weight|bias)", _OTHER_HEAD),
    ],
    "bert": [
        (r"embeddings\.(position_ids|token_type_ids)", "index buffer"),
        (r"cls\..*", "pretraining (MLM/NSP) head"),
        (r"pooler\.dense\.(weight|bias)", "pooler not used by this task"),
        (r"classifier\.(weight|bias)", _OTHER_HEAD),
        (r"qa_outputs\.(weight|bias)", _OTHER_HEAD),
    ],
    "roberta": [
        (r"embeddings\.(position_ids|token_type_ids)", "index buffer"),
        (r"lm_head\..*", "pretraining (MLM) head"),
        (r"pooler\.dense\.(weight|bias)", "pooler not used by RoBERTa heads"),
        (r"classifier\.(weight|bias|dense\.weight|dense\.bias|out_proj\.weight|out_proj\.bias)", _OTHER_HEAD),
        (r"qa_outputs\.(weight|bias)", _OTHER_HEAD),
    ],
    "distilbert": [
        (r"embeddings\.position_ids", "index buffer"),
        (r"vocab_(transform|layer_norm|projector)\.(weight|bias)", "pretraining (MLM) head"),
        (r"(pre_classifier|classifier|qa_outputs)\.(weight|bias)", _OTHER_HEAD),
    ],
    "llama": [
        (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq", "RoPE buffer (recomputed)"),
        (r"lm_head\.weight", "LM head not used (tied to embed_tokens, or another task)"),
        (r"score\.(weight|bias)", _OTHER_HEAD),
        (r"qa_outputs\.(weight|bias)", _OTHER_HEAD),
    ],
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a mapping table: the mgpt parameter path, the transpose flag and the tensor's role.

    role: "backbone" (must be in the checkpoint), "optional" (pretrained part that is initialised when
    absent, e.g. BERT's pooler) or "head" (loaded when the checkpoint has this task's head, else initialised).
    """

    path: tuple[str, ...]
    transpose: bool
    role: str


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


# BERT-layout destinations of one encoder layer, with the HF module name in BERT/RoBERTa and in DistilBERT.
_ENCODER_LAYER = [
    (("attention", "self", "query"), "attention.self.query", "attention.q_lin", "linear"),
    (("attention", "self", "key"), "attention.self.key", "attention.k_lin", "linear"),
    (("attention", "self", "value"), "attention.self.value", "attention.v_lin", "linear"),
    (("attention", "output", "dense"), "attention.output.dense", "attention.out_lin", "linear"),
    (("attention", "output", "LayerNorm"), "attention.output.LayerNorm", "sa_layer_norm", "layernorm"),
    (("intermediate", "dense"), "intermediate.dense", "ffn.lin1", "linear"),
    (("output", "dense"), "output.dense", "ffn.lin2", "linear"),
    (("output", "LayerNorm"), "output.LayerNorm", "output_layer_norm", "layernorm"),
]


def _encoder_table(spec: ModelSpec) -> dict[str, Entry]:
    """BERT, RoBERTa and DistilBERT (all on BERT's Flax layout)."""
    t: dict[str, Entry] = {}
    distil = spec.family == "distilbert"
    e = ("backbone", "embeddings")
    _add(t, "embeddings.word_embeddings", e + ("word_embeddings",), "embedding")
    _add(t, "embeddings.position_embeddings", e + ("position_embeddings",), "embedding")
    if spec.arch.type_vocab_size:
        _add(t, "embeddings.token_type_embeddings", e + ("token_type_embeddings",), "embedding")
    _add(t, "embeddings.LayerNorm", e + ("LayerNorm",), "layernorm")
    for i in range(spec.arch.num_layers):
        p = ("backbone", "encoder", f"layer_{i}")
        for path, bert_name, distil_name, kind in _ENCODER_LAYER:
            hf = f"transformer.layer.{i}.{distil_name}" if distil else f"encoder.layer.{i}.{bert_name}"
            _add(t, hf, p + path, kind)
    if spec.uses_pooler:
        _add(t, "pooler.dense", ("backbone", "pooler", "dense"), "linear", role="optional")
    if spec.task == "token_classification":
        _add(t, "classifier", ("head", "classifier"), "linear", role="head")
    elif spec.family == "roberta":  # RobertaClassificationHead: dense + tanh + out_proj
        _add(t, "classifier.dense", ("head", "classifier", "dense"), "linear", role="head")
        _add(t, "classifier.out_proj", ("head", "classifier", "out_proj"), "linear", role="head")
    elif distil:
        _add(t, "pre_classifier", ("head", "pre_classifier"), "linear", role="head")
        _add(t, "classifier", ("head", "classifier"), "linear", role="head")
    else:
        _add(t, "classifier", ("head", "classifier"), "linear", role="head")
    return t


def _llama_table(spec: ModelSpec) -> dict[str, Entry]:
    """Llama, Mistral, Qwen2 and Gemma share one layout; biases follow the architecture flags."""
    arch = spec.arch
    t: dict[str, Entry] = {}
    b = ("backbone",)
    _add(t, "embed_tokens", b + ("embed_tokens",), "embedding")
    for i in range(arch.num_layers):
        p = b + (f"layers_{i}",)
        for name in ("qkv_proj",) if arch.fused_qkv else ("q_proj", "k_proj", "v_proj"):
            _add(t, f"layers.{i}.self_attn.{name}", p + ("self_attn", name), "linear", bias=arch.qkv_bias)
        for name in ("q_norm", "k_norm") if arch.qk_norm else ():
            _add(t, f"layers.{i}.self_attn.{name}", p + ("self_attn", name), "layernorm", bias=False)
        _add(t, f"layers.{i}.self_attn.o_proj", p + ("self_attn", "o_proj"), "linear", bias=arch.o_bias)
        for name in ("gate_up_proj", "down_proj") if arch.fused_gate_up else ("gate_proj", "up_proj", "down_proj"):
            _add(t, f"layers.{i}.mlp.{name}", p + ("mlp", name), "linear", bias=arch.mlp_bias)
        _add(t, f"layers.{i}.input_layernorm", p + ("input_layernorm",), "layernorm", bias=False)
        _add(t, f"layers.{i}.post_attention_layernorm", p + ("post_attention_layernorm",), "layernorm", bias=False)
    _add(t, "norm", b + ("norm",), "layernorm", bias=False)
    if spec.task == "causal_lm":
        if not arch.tie_word_embeddings:
            _add(t, "lm_head", ("head", "lm_head"), "linear", role="head", bias=False)
    elif spec.task == "token_classification":  # GenericForTokenClassification: `score` with a bias
        _add(t, "score", ("head", "score"), "linear", role="head", bias=arch.token_classification_bias)
    else:  # GenericForSequenceClassification: `score` without a bias, on the last real token
        _add(t, "score", ("head", "score"), "linear", role="head", bias=False)
    return t


def mapping_table(spec: ModelSpec) -> dict[str, Entry]:
    """HF tensor name (no base prefix) -> :class:`Entry`, for this family, size and task."""
    if spec.family == "gpt2":
        return _gpt2_table(spec)
    if spec.family in ("bert", "roberta", "distilbert"):
        return _encoder_table(spec)
    if spec.family in LLAMA_FAMILIES:
        return _llama_table(spec)
    raise ValueError(f"no mapping table for family {spec.family!r}")


def normalize_name(name: str, family: str) -> str:
    """Strip the base-model prefix and map legacy TF names (LayerNorm.gamma/beta)."""
    prefix = BASE_PREFIX[family]
    if name.startswith(prefix):
        name = name[len(prefix) :]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def ignore_reason(name: str, family: str) -> Optional[str]:
    """Why a checkpoint tensor outside the table is deliberately unused, or None if it is unknown."""
    for pattern, reason in _IGNORED["llama" if family in LLAMA_FAMILIES else family]:
        if re.fullmatch(pattern, name):
            return reason
    return None


def checkpoint_head_task(hf_config) -> Optional[str]:
    """Which head the checkpoint's architecture carries ("sequence", "token", "lm", "none"), when config.json says."""
    for name in getattr(hf_config, "architectures", None) or []:
        if name.endswith("ForSequenceClassification"):
            return "sequence"
        if name.endswith("ForTokenClassification"):
            return "token"
        if name.endswith(("LMHeadModel", "ForCausalLM")):
            return "lm"
        if name.endswith(("Model", "ForMaskedLM", "ForPreTraining")):
            return "none"
    return None


def head_kind(task: str) -> str:
    """The :func:`checkpoint_head_task` value whose head fits ``task``."""
    return {"token_classification": "token", "causal_lm": "lm"}.get(task, "sequence")
