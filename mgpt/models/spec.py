"""The frozen :class:`ModelSpec`: which family, task and size a model is, and how it runs."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from mgpt.models.family import TASKS, get_family
from mgpt.models.scan import check_remat

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ATTENTION_IMPLS = ("", "xla", "cudnn")


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
    def is_decoder(self) -> bool:
        return get_family(self.family).is_decoder

    @property
    def uses_pooler(self) -> bool:
        """The head reads the pretrained pooler (BERT's sequence-level tasks, as BertForSequenceClassification;
        RoBERTa and DistilBERT heads read the first token's hidden state instead)."""
        return get_family(self.family).uses_pooler(self.task)

    @property
    def tied_lm_head(self) -> bool:
        """Causal-LM logits use the token embedding matrix (GPT-2 always; Llama family when configured)."""
        return get_family(self.family).tied_lm_head(self.arch, self.task)

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
    family = get_family(getattr(hf_config, "model_type", None))
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    if task == "causal_lm":
        if not family.is_decoder:
            raise ValueError(f"task 'causal_lm' needs a decoder model; {family.name!r} is an encoder")
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
    arch = family.read_arch(hf_config, dropout)
    _check_execution(family, arch, remat, scan_layers, attention_impl)
    return ModelSpec(
        family=family.name,
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


def _check_execution(family, arch, remat: str, scan_layers: bool, attention_impl: str) -> None:
    check_remat(remat)
    if attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl={attention_impl!r}: expected one of {ATTENTION_IMPLS}")
    if scan_layers:
        family.check_scan(arch)
