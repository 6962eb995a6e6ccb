"""Generic task heads and the top-level :class:`TaskModel` (backbone + head).

Families pick a head for each task and name its layers (``Family.build_head``); the head modules here
know nothing of any family. Param tree of a task model::

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

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models.family import get_family
from mgpt.models.layers import BackboneInputs, BackboneOutput, activation_fn, dense, gather_segments
from mgpt.models.spec import DTYPES, TASKS, ModelSpec, make_spec  # noqa: F401 -- re-exported


def last_token_index(attention_mask, length: int):
    """Index of the rightmost real token per row (works for right and left padding); T-1 without a mask."""
    if attention_mask is None:
        return None
    positions = jnp.arange(length)[None, :] * (attention_mask > 0)
    return jnp.argmax(positions, axis=-1)  # an all-padding row gives 0: finite, and weighted out by the loss


class Head(nn.Module):
    """The fields every head has; a head is called ``head(out: BackboneOutput, attention_mask, deterministic,
    num_segments)``. With ``num_segments`` > 0 (packed rows: the mask holds segment ids) a sequence-level head
    pools each segment and returns ``(B, num_segments, C)``; token-level heads are unchanged."""

    arch: Any
    num_labels: int = 0
    dtype: Any = jnp.float32


class LastTokenClassifier(Head):
    """Decoder *ForSequenceClassification: ``score`` (no bias) on the last real token's hidden state."""

    layer_name: str = "score"

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool, num_segments: int = 0):
        hidden = out.last_hidden_state
        index = last_token_index(attention_mask, hidden.shape[1])
        if num_segments:
            pooled = gather_segments(hidden, attention_mask, num_segments, last=True)
        elif index is None:
            pooled = hidden[:, -1]
        else:
            pooled = jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
        return dense(self.num_labels, self.arch.initializer_range, self.dtype, self.layer_name, False,
                     ("embed", None))(pooled)


class PooledClassifier(Head):
    """BertForSequenceClassification: pooler output -> dropout -> ``classifier``."""

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool, num_segments: int = 0):
        h = nn.Dropout(self.arch.classifier_dropout)(out.pooled, deterministic=deterministic)
        return dense(self.num_labels, self.arch.initializer_range, self.dtype, "classifier",
                     axes=("embed", None))(h)


class TokenClassifier(Head):
    """*ForTokenClassification: dropout -> ``classifier`` (Llama family: ``score``) on every position."""

    layer_name: str = "classifier"
    use_bias: bool = True

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool, num_segments: int = 0):
        h = nn.Dropout(self.arch.classifier_dropout)(out.last_hidden_state, deterministic=deterministic)
        return dense(self.num_labels, self.arch.initializer_range, self.dtype, self.layer_name, self.use_bias,
                     ("embed", None))(h)


class FirstTokenClassifier(Head):
    """Two dense layers on the first token: [dropout ->] ``names[0]`` -> activation -> dropout -> ``names[1]``.

    RoBERTa's head (tanh, dropout first, both layers grouped under ``classifier``) and DistilBERT's
    (``pre_classifier`` -> ReLU -> ``classifier``) are this module with different settings.
    """

    names: tuple = ("pre_classifier", "classifier")
    activation: str = "relu"
    dropout_rate: float = 0.0
    dropout_first: bool = False
    group: str = ""  # when set, the two layers live under this name (head/<group>/<names>)

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool, num_segments: int = 0):
        if self.group:
            inner = FirstTokenClassifier(self.arch, self.num_labels, self.dtype, self.names, self.activation,
                                         self.dropout_rate, self.dropout_first, name=self.group)
            return inner(out, attention_mask, deterministic, num_segments)
        std, drop = self.arch.initializer_range, nn.Dropout(self.dropout_rate)
        hidden = out.last_hidden_state
        h = gather_segments(hidden, attention_mask, num_segments, last=False) if num_segments else hidden[:, 0]
        if self.dropout_first:
            h = drop(h, deterministic=deterministic)
        h = dense(self.arch.hidden_size, std, self.dtype, self.names[0], axes=("embed", None))(h)
        h = drop(activation_fn(self.activation)(h), deterministic=deterministic)
        return dense(self.num_labels, std, self.dtype, self.names[1], axes=("embed", None))(h)


class LMHead(Head):
    """An untied ``lm_head`` (no bias), as LlamaForCausalLM with ``tie_word_embeddings=False``."""

    @nn.compact
    def __call__(self, out: BackboneOutput, attention_mask, deterministic: bool, num_segments: int = 0):
        return dense(self.arch.vocab_size, self.arch.initializer_range, self.dtype, "lm_head", False,
                     ("embed", "vocab"))(out.last_hidden_state)


class TaskModel(nn.Module):
    """Backbone + task head, both chosen by the spec's family. Call contract (the arguments of
    :class:`~mgpt.models.layers.BackboneInputs`)::

        model.apply({"params": params}, input_ids, attention_mask=mask, token_type_ids=None,
                    inputs_embeds=None, position_ids=None, prefix_key_values=None, deterministic=True,
                    return_hidden_states=False, cache=None, rngs={"dropout": key})

    returns float32 logits: (B, T, V) causal_lm, (B, C) sequence_classification, (B, T, C)
    token_classification, (B,) regression; with ``return_hidden_states`` a ``(logits, hidden_states)`` pair.
    Packed rows (``num_segments=K``, the mask holding segment ids) give (B, K, C) and (B, K) for the
    sequence-level tasks, one output per packed example.

    Decoding (decoder families): pass ``cache`` (a tuple of per-layer
    :class:`~mgpt.models.attention.KVCache`, see :func:`mgpt.generate.init_cache`), ``position_ids``
    ``(B, T)`` of the new tokens and ``attention_mask`` ``(B, S)`` over all cache slots; the call then
    returns ``(logits, new_cache)`` (``(logits, hidden_states, new_cache)`` with ``return_hidden_states``).
    """

    spec: ModelSpec

    def setup(self):
        family = get_family(self.spec.family)
        self.backbone = family.build_backbone(self.spec)
        self.head = family.build_head(self.spec)  # None: logits through the tied token embedding

    def encode(self, *args, **kwargs) -> BackboneOutput:
        """Only the backbone: :class:`BackboneOutput` (use with ``model.apply(..., method=model.encode)``).

        Takes the arguments of :class:`~mgpt.models.layers.BackboneInputs`, like ``__call__``.
        """
        return self.backbone(BackboneInputs(*args, **kwargs))

    def __call__(self, *args, **kwargs):
        inputs = BackboneInputs(*args, **kwargs)
        out = self.backbone(inputs)
        if self.head is None:
            logits = self.backbone.attend(out.last_hidden_state)
        else:
            logits = self.head(out, inputs.attention_mask, inputs.deterministic, inputs.num_segments)
        if self.spec.task == "regression":
            logits = logits[..., 0]
        logits = logits.astype(jnp.float32)  # losses and metrics always see float32
        if inputs.cache is not None:
            return (logits, out.hidden_states, out.cache) if inputs.return_hidden_states else (logits, out.cache)
        if inputs.return_hidden_states:
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


def decoder_head(spec: ModelSpec, token_layer: str = "classifier", token_bias: bool = True) -> Optional[nn.Module]:
    """The head a decoder family builds for ``spec.task``: the tied LM head (None) or an untied ``lm_head``,
    a token classifier named ``token_layer``, or ``score`` on the last real token."""
    dtype = spec.compute_dtype
    if spec.task == "causal_lm":
        return None if spec.tied_lm_head else LMHead(spec.arch, dtype=dtype)
    if spec.task == "token_classification":
        return TokenClassifier(spec.arch, spec.num_labels, dtype, token_layer, token_bias)
    return LastTokenClassifier(spec.arch, spec.num_labels, dtype)
