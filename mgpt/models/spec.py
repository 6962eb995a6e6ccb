"""The frozen :class:`ModelSpec` and the table of supported model families."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

from mgpt.models.bert import BertArch
from mgpt.models.gpt2 import GPT2Arch
from mgpt.models import phi3, qwen3
from mgpt.models.llama import LlamaArch
from mgpt.models.scan import SCANNED_LAYERS, check_remat

TASKS = ("sequence_classification", "token_classification", "regression", "causal_lm")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
LLAMA_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "qwen3", "phi3")
ATTENTION_IMPLS = ("", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class Family:
    """How a transformers ``model_type`` is built: its arch reader and which Flax backbone runs it."""

    read_arch: Callable[..., Any]  # (hf_config, dropout) -> frozen arch dataclass
    backbone: str  # "gpt2" | "bert" | "llama"

    @property
    def is_decoder(self) -> bool:
        return self.backbone != "bert"


FAMILIES = {
    "gpt2": Family(GPT2Arch.from_hf, "gpt2"),
    "bert": Family(BertArch.from_hf, "bert"),
    "roberta": Family(BertArch.from_roberta, "bert"),
    "distilbert": Family(BertArch.from_distilbert, "bert"),
    **{name: Family(LlamaArch.from_hf, "llama") for name in LLAMA_FAMILIES},
    "qwen3": Family(qwen3.read_arch, "llama"),
    "phi3": Family(phi3.read_arch, "llama"),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the model; hashable (the transformers config is excluded from eq/hash).

    ``load_report`` (a :class:`mgpt.models.hf.LoadReport`) says which head tensors were loaded or initialised
    when the spec came from :func:`mgpt.models.load_pretrained`.
    """

    family: str
    task: str
    num_labels: int
    arch: Any
    dtype: str = "float32"
    dropout: Optional[float] = None
    name_or_path: str = ""
    remat: str = "none"  # none | full | dots | dots_no_batch (see mgpt.models.scan)
    scan_layers: bool = False  # one nn.scan over the layers (params stacked on a leading axis)
    attention_impl: str = ""  # jax.nn.dot_product_attention implementation: "" (XLA) | "cudnn"
    hf_config: Any = dataclasses.field(default=None, compare=False, repr=False)
    load_report: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def backbone_kind(self) -> str:
        return FAMILIES[self.family].backbone

    @property
    def is_decoder(self) -> bool:
        return FAMILIES[self.family].is_decoder

    @property
    def uses_pooler(self) -> bool:
        """BERT's sequence-level tasks pool [CLS] through the pretrained pooler, as BertForSequenceClassification
        (RoBERTa and DistilBERT heads read the first token's hidden state instead)."""
        return self.family == "bert" and self.task in ("sequence_classification", "regression")

    @property
    def tied_lm_head(self) -> bool:
        """Causal-LM logits use the token embedding matrix (GPT-2 always; Llama family when configured)."""
        return self.task == "causal_lm" and (self.family == "gpt2" or bool(self.arch.tie_word_embeddings))

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]


def make_spec(
    hf_config,
    task: str,
    num_labels: Optional[int] = None,
    dtype: str = "float32",
    dropout: Optional[float] = None,
    name_or_path: str = "",
    remat: str = "none",
    scan_layers: bool = False,
    attention_impl: str = "",
) -> ModelSpec:
    """Validate the task/family combination and build the spec from a transformers config.

    ``remat``, ``scan_layers`` and ``attention_impl`` change how the model runs, never what it computes.
    """
    family = getattr(hf_config, "model_type", None)
    if family not in FAMILIES:
        raise ValueError(f"model_type {family!r} is not supported; mgpt supports: {sorted(FAMILIES)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    if task == "causal_lm":
        if not FAMILIES[family].is_decoder:
            raise ValueError(f"task 'causal_lm' needs a decoder model; {family!r} is an encoder")
        num_labels = 0
    elif task == "regression":
        if num_labels not in (None, 1):
            raise ValueError(f"task 'regression' has one output; got num_labels={num_labels}")
        num_labels = 1
    else:
        if num_labels is None:
            num_labels = int(hf_config.num_labels)
        if num_labels < 1:
            raise ValueError(f"task {task!r} needs num_labels >= 1, got {num_labels}")
    arch = FAMILIES[family].read_arch(hf_config, dropout)
    _check_execution(family, arch, remat, scan_layers, attention_impl)
    return ModelSpec(
        family=family,
        task=task,
        num_labels=int(num_labels),
        arch=arch,
        dtype=dtype,
        dropout=dropout,
        name_or_path=str(name_or_path),
        remat=remat,
        scan_layers=bool(scan_layers),
        attention_impl=attention_impl,
        hf_config=hf_config,
    )


def _check_execution(family: str, arch, remat: str, scan_layers: bool, attention_impl: str) -> None:
    check_remat(remat)
    if attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl={attention_impl!r}: expected one of {ATTENTION_IMPLS}")
    if not scan_layers:
        return
    if FAMILIES[family].backbone not in SCANNED_LAYERS:
        raise ValueError(f"scan_layers=True is not supported for {family!r}; it is for {sorted(SCANNED_LAYERS)} "
                         "backbones (GPT-2 and the Llama family)")
    # A scanned layer is one program for every layer: per-layer differences cannot be expressed.
    if getattr(arch, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("scan_layers=True: GPT-2 with scale_attn_by_inverse_layer_idx scales each layer "
                         "differently; run it unscanned")
    if len(set(getattr(arch, "sliding_windows", ()))) > 1:
        raise ValueError(f"scan_layers=True: {family} layers have different sliding windows "
                         f"{arch.sliding_windows}; run it unscanned")
