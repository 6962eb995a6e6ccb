"""Task heads and the top-level :class:`TaskModel` (backbone + head), plus the frozen :class:`ModelSpec`.

Param tree of a task model::

    {"backbone": {...family layout...}, "head": {...}}

    decoder sequence classification / regression:  head/score/kernel (E, C)          (no bias, as GPT-2's `score`)
    encoder sequence classification / regression:  head/classifier/{kernel, bias}   (+ backbone/pooler/dense)
    token classification:                           head/classifier/{kernel, bias}
    causal LM (GPT-2):                              no "head" entry; logits use backbone/wte/embedding (tied)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models.bert import BertArch, BertBackbone
from mgpt.models.gpt2 import BackboneOutput, GPT2Arch, GPT2Backbone

TASKS = ("sequence_classification", "token_classification", "regression", "causal_lm")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# family -> (arch class, is_decoder)
FAMILIES = {"gpt2": (GPT2Arch, True), "bert": (BertArch, False)}


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
    hf_config: Any = dataclasses.field(default=None, compare=False, repr=False)
    load_report: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def is_decoder(self) -> bool:
        return FAMILIES[self.family][1]

    @property
    def uses_pooler(self) -> bool:
        """Encoder sequence-level tasks pool [CLS] through the pretrained pooler, as BertForSequenceClassification."""
        return not self.is_decoder and self.task in ("sequence_classification", "regression")

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
) -> ModelSpec:
    """Validate the task/family combination and build the spec from a transformers config."""
    family = getattr(hf_config, "model_type", None)
    if family not in FAMILIES:
        raise ValueError(f"model_type {family!r} is not supported; mgpt supports: {sorted(FAMILIES)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    arch_cls, is_decoder = FAMILIES[family]
    if task == "causal_lm":
        if not is_decoder:
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
    return ModelSpec(
        family=family,
        task=task,
        num_labels=int(num_labels),
        arch=arch_cls.from_hf(hf_config, dropout),
        dtype=dtype,
        dropout=dropout,
        name_or_path=str(name_or_path),
        hf_config=hf_config,
    )


def _classifier(features: int, arch, dtype, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(arch.initializer_range),
        name=name,
    )


def last_token_index(attention_mask, length: int):
    """Index of the rightmost real token per row (works for right and left padding); T-1 without a mask."""
    if attention_mask is None:
        return None
    positions = jnp.arange(length)[None, :] * (attention_mask > 0)
    return jnp.argmax(positions, axis=-1)  # an all-padding row gives 0: finite, and weighted out by the loss


class LastTokenClassifier(nn.Module):
    """GPT2ForSequenceClassification: ``score`` (no bias) on the last real token's hidden state."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        hidden = out.last_hidden_state
        index = last_token_index(attention_mask, hidden.shape[1])
        if index is None:
            pooled = hidden[:, -1]
        else:
            pooled = jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
        return _classifier(self.num_labels, self.arch, self.dtype, "score", use_bias=False)(pooled)


class PooledClassifier(nn.Module):
    """BertForSequenceClassification: pooler output -> dropout -> ``classifier``."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        h = nn.Dropout(self.arch.classifier_dropout)(out.pooled, deterministic=deterministic)
        return _classifier(self.num_labels, self.arch, self.dtype, "classifier")(h)


class TokenClassifier(nn.Module):
    """*ForTokenClassification: dropout -> ``classifier`` on every position."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        h = nn.Dropout(self.arch.classifier_dropout)(out.last_hidden_state, deterministic=deterministic)
        return _classifier(self.num_labels, self.arch, self.dtype, "classifier")(h)


class TaskModel(nn.Module):
    """Backbone + task head. Call contract::

        model.apply({"params": params}, input_ids, attention_mask=mask, token_type_ids=None,
                    inputs_embeds=None, deterministic=True, return_hidden_states=False,
                    rngs={"dropout": key})

    returns float32 logits: (B, T, V) causal_lm, (B, C) sequence_classification, (B, T, C)
    token_classification, (B,) regression; with ``return_hidden_states`` a ``(logits, hidden_states)`` pair.
    """

    spec: ModelSpec

    def setup(self):
        spec = self.spec
        dtype = spec.compute_dtype
        if spec.family == "gpt2":
            self.backbone = GPT2Backbone(spec.arch, dtype)
        else:
            self.backbone = BertBackbone(spec.arch, add_pooler=spec.uses_pooler, dtype=dtype)
        if spec.task == "causal_lm":
            self.head = None
        elif spec.task == "token_classification":
            self.head = TokenClassifier(spec.arch, spec.num_labels, dtype)
        elif spec.is_decoder:
            self.head = LastTokenClassifier(spec.arch, spec.num_labels, dtype)
        else:
            self.head = PooledClassifier(spec.arch, spec.num_labels, dtype)

    def encode(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        position_ids=None,
        prefix_key_values: Optional[Sequence] = None,
        deterministic: bool = True,
        return_hidden_states: bool = False,
    ) -> BackboneOutput:
        """Only the backbone (use with ``model.apply(..., method=model.encode)``)."""
        return self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            prefix_key_values=prefix_key_values,
            deterministic=deterministic,
            return_hidden_states=return_hidden_states,
        )

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        position_ids=None,
        prefix_key_values: Optional[Sequence] = None,
        deterministic: bool = True,
        return_hidden_states: bool = False,
    ):
        out = self.encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            position_ids,
            prefix_key_values,
            deterministic,
            return_hidden_states,
        )
        if self.head is None:
            logits = self.backbone.attend(out.last_hidden_state)
        else:
            logits = self.head(out, attention_mask, deterministic)
        if self.spec.task == "regression":
            logits = logits[..., 0]
        logits = logits.astype(jnp.float32)  # losses and metrics always see float32
        if return_hidden_states:
            return logits, out.hidden_states
        return logits


def build_model(spec: ModelSpec) -> TaskModel:
    """The Flax module for a spec (no parameters; see :func:`mgpt.models.load_pretrained`)."""
    return TaskModel(spec)
