"""Generic access to the families' tensor-name tables (each family declares its own table).

:func:`mapping_table` says, for every transformers tensor name (without the base-model prefix such as
``transformer.``/``bert.``/``model.``), which mgpt parameter it fills and whether it is transposed (PyTorch
``nn.Linear`` weights are ``(out, in)``; GPT-2's ``Conv1D`` weights are already ``(in, out)``). Loading reads a
table forwards, export reads the same table backwards, so the two cannot drift apart.

The functions here only ask the family (:mod:`mgpt.models.family`); :func:`add_rows` is the row helper the
family modules write their tables with.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from mgpt.models.family import get_family


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a mapping table: the mgpt parameter path, the transpose flag and the tensor's role.

    role: "backbone" (must be in the checkpoint), "optional" (pretrained part that is initialised when
    absent, e.g. BERT's pooler) or "head" (loaded when the checkpoint has this task's head, else initialised).
    """

    path: tuple[str, ...]
    transpose: bool
    role: str


def add_rows(table: dict, hf: str, path: tuple, kind: str, role: str = "backbone", bias: bool = True) -> None:
    """Expand one HF module into its weight/bias rows.

    kind: "embedding", "layernorm" (weight -> scale), "linear" (torch ``nn.Linear``, transposed) or
    "conv1d" (GPT-2's ``Conv1D``, already ``(in, out)``).
    """
    if kind == "embedding":
        table[f"{hf}.weight"] = Entry(path + ("embedding",), False, role)
        return
    if kind == "layernorm":
        table[f"{hf}.weight"] = Entry(path + ("scale",), False, role)
    elif kind in ("linear", "conv1d"):
        table[f"{hf}.weight"] = Entry(path + ("kernel",), kind == "linear", role)
    else:
        raise ValueError(kind)
    if bias:
        table[f"{hf}.bias"] = Entry(path + ("bias",), False, role)


def base_prefix(family: str) -> str:
    """The base-model prefix of the family's task checkpoints (``"transformer."``, ``"bert."``, ``"model."``)."""
    return get_family(family).base_prefix


def architecture(family: str, task: str) -> Optional[str]:
    """The transformers class written into config.json's ``architectures`` on export, or None if there is none."""
    return get_family(family).hf_architecture(task)


def mapping_table(spec) -> dict[str, Entry]:
    """HF tensor name (no base prefix) -> :class:`Entry`, for this family, size and task."""
    return get_family(spec.family).tensor_table(spec)


def normalize_name(name: str, family: str) -> str:
    """Strip the base-model prefix and map legacy TF names (LayerNorm.gamma/beta)."""
    prefix = get_family(family).base_prefix
    if name.startswith(prefix):
        name = name[len(prefix) :]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def ignore_reason(name: str, family: str) -> Optional[str]:
    """Why a checkpoint tensor outside the table is deliberately unused, or None if it is unknown."""
    for pattern, reason in get_family(family).ignored:
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


def checkpoint_task(hf_config) -> Optional[str]:
    """The mgpt task a checkpoint's head was saved for (from :func:`checkpoint_head_task`), or None (bare
    model or no ``architectures``); a sequence head is "regression" when ``problem_type`` says so."""
    kind = checkpoint_head_task(hf_config)
    if kind == "sequence":
        regression = getattr(hf_config, "problem_type", None) == "regression"
        return "regression" if regression else "sequence_classification"
    return {"token": "token_classification", "lm": "causal_lm"}.get(kind)
