"""A tokenizer as llama.cpp's GGUF metadata (``tokenizer.*``): what :func:`mgpt.models.gguf_export.save_gguf`
writes next to the weights.

Two sources. A model read from a GGUF file keeps that file's tokenizer fields exactly as they were (type and
value, :func:`copied_fields`). Any other model needs a fast byte-level BPE tokenizer (``tokenizer.json`` model
``"BPE"``, GPT-2's byte alphabet), which GGUF calls ``tokenizer.ggml.model = "gpt2"`` (:func:`bpe_fields`): the
tokens in id order, their types, the merges, the special ids, whether BOS/EOS are added and the chat template.
The pre-tokenizer is named by llama.cpp's ``tokenizer.ggml.pre``, whose split regex readers look up by name; a
tokenizer whose normalizer, split or post-processing GGUF cannot name is refused with one line.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from mgpt.models.safetensors_io import CheckpointError

logger = logging.getLogger("mgpt")

# llama.cpp token types (llama_token_type).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

# tokenizer.ggml.pre names and the split regex each stands for ("gpt2": ByteLevel's own GPT-2 regex).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}

# Metadata value (key -> (value, GGUFValueType name, array item type name or None)).
Fields = dict[str, tuple[Any, str, Optional[str]]]


def copied_fields(reader) -> Fields:
    """The ``tokenizer.*`` fields of a GGUF file (a ``GGUFReader``), with their value types, unchanged."""
    out: Fields = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            sub = field.types[1].name if len(field.types) > 1 else None
            out[key] = (field.contents(), field.types[0].name, sub)
    return out


def _refuse(message: str):
    raise CheckpointError(f"save_gguf: the tokenizer {message}; GGUF holds byte-level BPE tokenizers "
                          "(export with tokenizer=None for the weights alone)")


def _pre_name(pre: Optional[dict]) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level pre-tokenizer (tokenizer.json form)."""
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space"):
            _refuse("adds a prefix space (ByteLevel add_prefix_space=True)")
        return "gpt2"
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else []
    if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        pattern = steps[0].get("pattern", {}).get("Regex")
        if pattern in PRE_SPLITS and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert"):
            return PRE_SPLITS[pattern]
        _refuse(f"splits text with a regex GGUF has no tokenizer.ggml.pre name for ({pattern!r})")
    _refuse(f"has a pre-tokenizer GGUF cannot name ({json.dumps(pre)[:120]})")


def _special_ends(tokenizer) -> tuple[bool, bool]:
    """Whether encoding adds BOS in front and EOS at the end; anything else a post-processor does is refused."""
    text = "a b"
    plain = tokenizer.encode(text, add_special_tokens=False)
    full = tokenizer.encode(text, add_special_tokens=True)
    bos = tokenizer.bos_token_id is not None and full[:1] == [tokenizer.bos_token_id] and full[1:1 + len(plain)] == plain
    rest = full[1:] if bos else full
    eos = tokenizer.eos_token_id is not None and rest == plain + [tokenizer.eos_token_id]
    if not eos and rest != plain:
        _refuse(f"adds special tokens GGUF cannot express (encode({text!r}) gives {full}, without specials {plain})")
    return bos, eos


def bpe_fields(tokenizer, vocab_size: int) -> Fields:
    """The ``tokenizer.*`` fields of a fast byte-level BPE tokenizer for a model with ``vocab_size`` rows
    (ids the tokenizer does not use become unused ``[PAD<id>]`` tokens, as llama.cpp's converter pads them)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        _refuse(f"{type(tokenizer).__name__} is not a fast (tokenizers) tokenizer")
    state = json.loads(backend.to_str())
    model = state.get("model") or {}
    if model.get("type") != "BPE":
        _refuse(f"model is {model.get('type')!r}, not 'BPE'")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        _refuse("BPE uses byte fallback or subword affixes (a sentencepiece-style BPE)")
    normalizer = (state.get("normalizer") or {}).get("type")
    if normalizer == "NFC":  # Qwen2's; llama.cpp's converter drops it too (a no-op on NFC text)
        logger.warning("save_gguf: the tokenizer's NFC normalizer is not written (GGUF has no normalizer field)")
    elif normalizer is not None:
        _refuse(f"has a normalizer ({normalizer}), which GGUF cannot express")
    if (state.get("decoder") or {}).get("type") != "ByteLevel":
        _refuse("decoder is not ByteLevel")
    pre = _pre_name(state.get("pre_tokenizer"))
    tokens: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in model["vocab"].items()}
    for added in state.get("added_tokens", []):
        tokens[added["id"]] = (added["content"], CONTROL if added.get("special") else USER_DEFINED)
    if max(tokens) >= vocab_size:
        _refuse(f"has ids up to {max(tokens)} but the model's vocabulary has {vocab_size} rows")
    rows = [tokens.get(i, (f"[PAD{i}]", UNUSED)) for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if any(m.count(" ") != 1 for m in merges):
        _refuse("has a merge whose parts contain a space")
    add_bos, add_eos = _special_ends(tokenizer)
    fields: Fields = {
        "tokenizer.ggml.model": ("gpt2", "STRING", None),
        "tokenizer.ggml.pre": (pre, "STRING", None),
        "tokenizer.ggml.tokens": ([t for t, _ in rows], "ARRAY", "STRING"),
        "tokenizer.ggml.token_type": ([k for _, k in rows], "ARRAY", "INT32"),
        "tokenizer.ggml.merges": (merges, "ARRAY", "STRING"),
        "tokenizer.ggml.add_bos_token": (add_bos, "BOOL", None),
        "tokenizer.ggml.add_eos_token": (add_eos, "BOOL", None),
    }
    for key, value in (("bos_token_id", tokenizer.bos_token_id), ("eos_token_id", tokenizer.eos_token_id),
                       ("padding_token_id", tokenizer.pad_token_id), ("unknown_token_id", tokenizer.unk_token_id)):
        if value is not None:
            fields[f"tokenizer.ggml.{key}"] = (int(value), "UINT32", None)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one is what readers apply
        template = template.get("default")
    if isinstance(template, str) and template:
        fields["tokenizer.chat_template"] = (template, "STRING", None)
    return fields
