"""Task heads and the top-level :class:`TaskModel` (backbone + head).

Param tree of a task model::

    {"backbone": {...family layout...}, "head": {...}}

    sequence classification / regression
      decoders (GPT-2, Llama family):  head/score/kernel (E, C)  (no bias, on the last real token)
      BERT:                            head/classifier/{kernel, bias}  (+ backbone/pooler/dense)
      RoBERTa:                         head/classifier/{dense, out_proj}/{kernel, bias}
      DistilBERT:                      head/{pre_classifier, classifier}/{kernel, bias}
    token classification:              head/classifier/{kernel, bias}  (Llama family: head/score/...)
    causal LM:                         no "head" when tied to the token embedding (GPT-2, tied Llama
                                       family); head/lm_head/kernel (E, V) when untied
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mgpt.models.bert import BertBackbone
from mgpt.models.gpt2 import BackboneOutput, GPT2Backbone
from mgpt.models.llama import LlamaBackbone
from mgpt.models.partitioning import dense_inits
from mgpt.models.spec import DTYPES, FAMILIES, TASKS, ModelSpec, make_spec  # noqa: F401 -- re-exported


def _classifier(features: int, arch, dtype, name: str, use_bias: bool = True,
                axes: tuple = ("embed", None)) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **dense_inits(arch.initializer_range, axes),  # logical axis names for the sharding rules
    )


def last_token_index(attention_mask, length: int):
    """Index of the rightmost real token per row (works for right and left padding); T-1 without a mask."""
    if attention_mask is None:
        return None
    positions = jnp.arange(length)[None, :] * (attention_mask > 0)
    return jnp.argmax(positions, axis=-1)  # an all-padding row gives 0: finite, and weighted out by the loss


class LastTokenClassifier(nn.Module):
    """GPT2/Llama-family ForSequenceClassification: ``score`` (no bias) on the last real token's hidden state."""

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
    """*ForTokenClassification: dropout -> ``classifier`` (Llama family: ``score``) on every position."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32
    layer_name: str = "classifier"
    use_bias: bool = True

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        h = nn.Dropout(self.arch.classifier_dropout)(out.last_hidden_state, deterministic=deterministic)
        return _classifier(self.num_labels, self.arch, self.dtype, self.layer_name, self.use_bias)(h)


class RobertaClassificationHead(nn.Module):
    """RoBERTa's ``classifier``: dropout -> ``dense`` -> tanh -> dropout -> ``out_proj`` on the <s> token."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden, deterministic: bool):
        drop = nn.Dropout(self.arch.classifier_dropout)
        h = drop(hidden[:, 0], deterministic=deterministic)
        h = jnp.tanh(_classifier(self.arch.hidden_size, self.arch, self.dtype, "dense")(h))
        h = drop(h, deterministic=deterministic)
        return _classifier(self.num_labels, self.arch, self.dtype, "out_proj")(h)


class RobertaSequenceClassifier(nn.Module):
    """RobertaForSequenceClassification's head (not BERT's pooler)."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        head = RobertaClassificationHead(self.arch, self.num_labels, self.dtype, name="classifier")
        return head(out.last_hidden_state, deterministic)


class DistilBertSequenceClassifier(nn.Module):
    """DistilBertForSequenceClassification: ``pre_classifier`` -> ReLU -> dropout -> ``classifier`` on [CLS]."""

    arch: Any
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        h = _classifier(self.arch.hidden_size, self.arch, self.dtype, "pre_classifier")(out.last_hidden_state[:, 0])
        h = nn.Dropout(self.arch.sequence_classifier_dropout)(jax.nn.relu(h), deterministic=deterministic)
        return _classifier(self.num_labels, self.arch, self.dtype, "classifier")(h)


class CausalLMHead(nn.Module):
    """An untied ``lm_head`` (no bias), as LlamaForCausalLM with ``tie_word_embeddings=False``."""

    arch: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool):
        return _classifier(self.arch.vocab_size, self.arch, self.dtype, "lm_head", use_bias=False,
                           axes=("embed", "vocab"))(out.last_hidden_state)


class TaskModel(nn.Module):
    """Backbone + task head. Call contract::

        model.apply({"params": params}, input_ids, attention_mask=mask, token_type_ids=None,
                    inputs_embeds=None, deterministic=True, return_hidden_states=False,
                    rngs={"dropout": key})

    returns float32 logits: (B, T, V) causal_lm, (B, C) sequence_classification, (B, T, C)
    token_classification, (B,) regression; with ``return_hidden_states`` a ``(logits, hidden_states)`` pair.

    Decoding (decoder families): pass ``cache`` (a tuple of per-layer
    :class:`~mgpt.models.attention.KVCache`, see :func:`mgpt.generate.init_cache`), ``position_ids``
    ``(B, T)`` of the new tokens and ``attention_mask`` ``(B, S)`` over all cache slots; the call then
    returns ``(logits, new_cache)`` (``(logits, hidden_states, new_cache)`` with ``return_hidden_states``).
    """

    spec: ModelSpec

    def setup(self):
        spec = self.spec
        dtype = spec.compute_dtype
        kind = spec.backbone_kind
        run = dict(remat=spec.remat, attention_impl=spec.attention_impl)  # how it runs, not what it computes
        if kind == "gpt2":
            self.backbone = GPT2Backbone(spec.arch, dtype, scan_layers=spec.scan_layers, **run)
        elif kind == "llama":
            self.backbone = LlamaBackbone(spec.arch, dtype, scan_layers=spec.scan_layers, **run)
        else:
            self.backbone = BertBackbone(spec.arch, add_pooler=spec.uses_pooler, dtype=dtype, **run)
        if spec.task == "causal_lm":
            self.head = None if spec.tied_lm_head else CausalLMHead(spec.arch, dtype)
        elif spec.task == "token_classification":
            if kind == "llama":  # GenericForTokenClassification names it `score`
                self.head = TokenClassifier(spec.arch, spec.num_labels, dtype, "score",
                                            spec.arch.token_classification_bias)
            else:
                self.head = TokenClassifier(spec.arch, spec.num_labels, dtype)
        elif spec.is_decoder:
            self.head = LastTokenClassifier(spec.arch, spec.num_labels, dtype)
        elif spec.family == "roberta":
            self.head = RobertaSequenceClassifier(spec.arch, spec.num_labels, dtype)
        elif spec.family == "distilbert":
            self.head = DistilBertSequenceClassifier(spec.arch, spec.num_labels, dtype)
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
        cache: Optional[Sequence] = None,
    ) -> BackboneOutput:
        """Only the backbone (use with ``model.apply(..., method=model.encode)``)."""
        extra = {}
        if cache is not None:  # only the decoder families decode with a KV cache
            if not self.spec.is_decoder:
                raise ValueError(f"{self.spec.family}: decoding with a KV cache needs a decoder model")
            extra["cache"] = cache
        return self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            prefix_key_values=prefix_key_values,
            deterministic=deterministic,
            return_hidden_states=return_hidden_states,
            **extra,
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
        cache: Optional[Sequence] = None,
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
            cache,
        )
        if self.head is None:
            logits = self.backbone.attend(out.last_hidden_state)
        else:
            logits = self.head(out, attention_mask, deterministic)
        if self.spec.task == "regression":
            logits = logits[..., 0]
        logits = logits.astype(jnp.float32)  # losses and metrics always see float32
        if cache is not None:
            return (logits, out.hidden_states, out.cache) if return_hidden_states else (logits, out.cache)
        if return_hidden_states:
            return logits, out.hidden_states
        return logits

    def project(self, hidden):
        """Causal LM: float32 vocabulary logits of final hidden states ``(..., E)`` (the output projection
        alone, so a loss can run it chunk by chunk; use with ``model.apply(..., method="project")``)."""
        if self.spec.task != "causal_lm":
            raise ValueError(f"project: only causal_lm models have an output projection, not {self.spec.task}")
        if self.head is None:
            return self.backbone.attend(hidden).astype(jnp.float32)
        return self.head(BackboneOutput(hidden, None), None, True).astype(jnp.float32)


def build_model(spec: ModelSpec) -> TaskModel:
    """The Flax module for a spec (no parameters; see :func:`mgpt.models.load_pretrained`)."""
    return TaskModel(spec)
