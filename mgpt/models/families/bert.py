"""BERT encoder in Flax Linen, laid out like Hugging Face's ``BertModel`` (covers MiniLM checkpoints).

RoBERTa and DistilBERT run on these layers (:mod:`mgpt.models.families.roberta`,
:mod:`mgpt.models.families.distilbert` declare their own arch reader, names and heads through
:func:`encoder_family`): RoBERTa differs only in its position ids (from ``padding_idx + 1``, skipping padding),
DistilBERT has no token types and no dropout after the attention output projection.

Param tree (under the task model's ``"backbone"``)::

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/LayerNorm/{scale,bias}
    encoder/layer_{i}/attention/self/{query,key,value}/{kernel (E, E), bias}
    encoder/layer_{i}/attention/output/dense/{kernel,bias}   encoder/layer_{i}/attention/output/LayerNorm/{scale,bias}
    encoder/layer_{i}/intermediate/dense/{kernel (E, I),bias}
    encoder/layer_{i}/output/dense/{kernel (I, E),bias}      encoder/layer_{i}/output/LayerNorm/{scale,bias}
    pooler/dense/{kernel,bias}                               (only when ``add_pooler``)

Kernels are ``(in, out)``: the transpose of PyTorch ``nn.Linear`` weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from mgpt.models import scan as scan_lib
from mgpt.models.family import Arch, Family, config_fields, register
from mgpt.models.heads import PooledClassifier, TokenClassifier
from mgpt.models.layers import (
    BackboneInputs,
    BackboneOutput,
    activation_fn,
    attention_block,
    check_inputs,
    dense,
    dropout_rates,
    gather_segments,
    layer_norm,
    perturb_token_embeddings,
    segment_positions,
)
from mgpt.models.mappings import Entry, add_rows
from mgpt.models.partitioning import EMBEDDING, constrain_hidden, named


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertArch(Arch):
    """:class:`Arch` plus what BERT, RoBERTa and DistilBERT differ in (``num_kv_heads == num_heads``)."""

    type_vocab_size: int
    position_padding_idx: Optional[int] = None  # RoBERTa: positions count from padding_idx + 1
    sequence_classifier_dropout: Optional[float] = None  # DistilBERT's seq_classif_dropout
    attention_output_dropout: bool = True  # DistilBERT has none after out_lin


def encoder_arch(*, hidden_size: int, num_heads: int, rates: dict, dropout: Optional[float], **fields) -> BertArch:
    """A :class:`BertArch` with the derived head fields and the dropout override applied."""
    activation_fn(fields["activation"])  # fail early on an unknown name
    return BertArch(hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_heads,
                    head_dim=hidden_size // num_heads, **fields, **dropout_rates(rates, dropout))


def read_arch(config, dropout: Optional[float] = None) -> BertArch:
    """Read a ``BertConfig``; ``dropout`` overrides every dropout rate when given."""
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ValueError("BERT as a decoder (is_decoder/add_cross_attention) is not supported by mgpt")
    kind = getattr(config, "position_embedding_type", "absolute") or "absolute"
    if kind != "absolute":
        raise ValueError(f"BERT position_embedding_type={kind!r} is not supported; only 'absolute'")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"BERT config: hidden_size={config.hidden_size} is not divisible by "
            f"num_attention_heads={config.num_attention_heads}"
        )
    classifier = getattr(config, "classifier_dropout", None)
    if classifier is None:  # as BertFor*Classification
        classifier = config.hidden_dropout_prob
    rates = dict(hidden_dropout=config.hidden_dropout_prob, attention_dropout=config.attention_probs_dropout_prob,
                 classifier_dropout=classifier)
    names = config_fields(config, vocab_size="vocab_size", hidden_size="hidden_size", num_layers="num_hidden_layers",
                          num_heads="num_attention_heads", intermediate_size="intermediate_size",
                          activation="hidden_act", norm_eps="layer_norm_eps", max_positions="max_position_embeddings",
                          type_vocab_size="type_vocab_size", initializer_range="initializer_range")
    return encoder_arch(rates=rates, dropout=dropout, **names)


class EncoderModule(nn.Module):
    """The fields of every encoder module: the arch, the compute dtype, the attention implementation."""

    arch: BertArch
    dtype: Any = jnp.float32
    attention_impl: str = ""


class BertEmbeddings(EncoderModule):
    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds, deterministic: bool,
                 perturb=None):
        arch = self.arch
        init = nn.initializers.normal(arch.initializer_range)

        def embed(num, name, axes=(None, "embed")):
            return nn.Embed(num, arch.hidden_size, embedding_init=named(init, axes), dtype=self.dtype, name=name)

        word = embed(arch.vocab_size, "word_embeddings", EMBEDDING)
        if inputs_embeds is None:
            inputs_embeds = word(input_ids)
        else:
            word.embedding  # noqa: B018 -- still create the table so the param tree is the same either way
        x = inputs_embeds.astype(self.dtype)
        if perturb is not None:
            x = perturb(x)
        if arch.type_vocab_size:  # DistilBERT has no token types
            x = x + embed(arch.type_vocab_size, "token_type_embeddings")(token_type_ids)
        x = x + embed(arch.max_positions, "position_embeddings")(position_ids)
        x = layer_norm(arch.norm_eps, self.dtype, "LayerNorm")(x)
        return nn.Dropout(arch.hidden_dropout)(x, deterministic=deterministic)


class BertSelfAttention(EncoderModule):
    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None):
        arch = self.arch
        batch, length, width = x.shape
        head_dim = width // arch.num_heads

        def project(name):
            layer = dense(width, arch.initializer_range, self.dtype, name, axes=("embed", "heads"))
            return layer(x).reshape(batch, length, arch.num_heads, head_dim)

        q, k, v = project("query"), project("key"), project("value")
        out, _ = attention_block(self, q, k, v, key_mask, deterministic=deterministic, causal=False,
                                 dropout_rate=arch.attention_dropout, prefix_kv=prefix_kv,
                                 implementation=self.attention_impl)
        return out.reshape(batch, length, width)


class BertAddNorm(EncoderModule):
    """dense -> dropout -> LayerNorm(x + residual): BertSelfOutput and BertOutput share this shape."""

    dropout: bool = True
    in_axis: str = "heads"  # the dense input: attention heads (BertSelfOutput) or "mlp" (BertOutput)

    @nn.compact
    def __call__(self, x, residual, deterministic: bool):
        arch = self.arch
        h = dense(arch.hidden_size, arch.initializer_range, self.dtype, "dense", axes=(self.in_axis, "embed"))(x)
        if self.dropout:
            h = nn.Dropout(self.arch.hidden_dropout)(h, deterministic=deterministic)
        return layer_norm(self.arch.norm_eps, self.dtype, "LayerNorm")(h + residual)


class BertAttention(EncoderModule):
    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None):
        h = BertSelfAttention(self.arch, self.dtype, self.attention_impl, name="self")(
            x, key_mask, deterministic, prefix_kv)
        add_norm = BertAddNorm(self.arch, self.dtype, dropout=self.arch.attention_output_dropout, name="output")
        return add_norm(h, x, deterministic)


class BertIntermediate(EncoderModule):
    @nn.compact
    def __call__(self, x):
        arch = self.arch
        h = dense(arch.intermediate_size, arch.initializer_range, self.dtype, "dense", axes=("embed", "mlp"))(x)
        return activation_fn(arch.activation)(h)


class BertLayer(EncoderModule):
    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_kv=None):
        x = BertAttention(self.arch, self.dtype, self.attention_impl, name="attention")(
            x, key_mask, deterministic, prefix_kv)
        h = BertIntermediate(self.arch, self.dtype, name="intermediate")(x)
        return BertAddNorm(self.arch, self.dtype, in_axis="mlp", name="output")(h, x, deterministic)


class BertEncoder(nn.Module):
    arch: BertArch
    dtype: Any = jnp.float32
    remat: str = "none"
    attention_impl: str = ""

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, prefix_key_values=None, return_hidden_states=False):
        all_hidden = [x] if return_hidden_states else None
        layer = scan_lib.layer_class(BertLayer, self.remat, 3)  # arg 3: deterministic
        for i in range(self.arch.num_layers):
            prefix = prefix_key_values[i] if prefix_key_values is not None else None
            x = layer(self.arch, self.dtype, self.attention_impl, name=f"layer_{i}")(x, key_mask, deterministic, prefix)
            x = constrain_hidden(x)
            if return_hidden_states:
                all_hidden.append(x)
        return x, (tuple(all_hidden) if return_hidden_states else None)


class BertPooler(EncoderModule):
    @nn.compact
    def __call__(self, hidden):
        layer = dense(self.arch.hidden_size, self.arch.initializer_range, self.dtype, "dense", axes=("embed", None))
        return jnp.tanh(layer(hidden))  # hidden: the pooled tokens, (B, E) or (B, K, E)


def encoder_positions(input_ids, length: int, padding_idx: Optional[int]):
    """``0..T-1`` (BERT); RoBERTa: ``padding_idx + 1 + index`` over non-padding ids and ``padding_idx`` on
    padding, as transformers' ``create_position_ids_from_input_ids`` (sequential without ``input_ids``)."""
    if padding_idx is None:
        return jnp.arange(length)[None, :]
    if input_ids is None:
        return jnp.arange(padding_idx + 1, padding_idx + 1 + length)[None, :]
    real = (input_ids != padding_idx).astype(jnp.int32)
    return jnp.cumsum(real, axis=-1) * real + padding_idx


class BertBackbone(nn.Module):
    """BERT encoder: embeddings + LayerNorm, ``num_layers`` post-LN layers, optional pooler (dense+tanh on [CLS])."""

    arch: BertArch
    add_pooler: bool = True
    dtype: Any = jnp.float32
    remat: str = "none"  # see mgpt.models.scan (BERT layers are not scanned)
    attention_impl: str = ""

    @nn.compact
    def __call__(self, inputs: BackboneInputs) -> BackboneOutput:
        """Run the encoder on :class:`~mgpt.models.layers.BackboneInputs` (no KV cache).

        ``token_type_ids`` default to zeros; ``position_ids`` default to ``0..T-1`` (RoBERTa: see
        :func:`encoder_positions`). Prefix keys/values are ``(B, P, H, D)``.
        """
        arch = self.arch
        check_inputs(inputs, "BERT", arch.num_layers, decoder=False)
        input_ids, position_ids, token_type_ids = inputs.input_ids, inputs.position_ids, inputs.token_type_ids
        batch, length = (input_ids.shape if input_ids is not None else inputs.inputs_embeds.shape[:2])
        if position_ids is None:
            offset = 0 if arch.position_padding_idx is None else arch.position_padding_idx + 1
            if length + offset > arch.max_positions:
                raise ValueError(
                    f"BERT: sequence length {length} (+ position offset {offset}) exceeds "
                    f"max_position_embeddings={arch.max_positions}"
                )
            pad = arch.position_padding_idx
            if not inputs.num_segments:
                position_ids = encoder_positions(input_ids, length, pad)
            else:  # packed rows: each example's positions start where a lone one's would
                position_ids = (segment_positions(inputs.attention_mask) if pad is None
                                else segment_positions(inputs.attention_mask, pad + 1, pad))
        if token_type_ids is None:
            token_type_ids = jnp.zeros((batch, length), jnp.int32)
        x = BertEmbeddings(arch, self.dtype, name="embeddings")(
            input_ids, token_type_ids, position_ids, inputs.inputs_embeds, inputs.deterministic,
            lambda x: perturb_token_embeddings(x, inputs),
        )
        x, all_hidden = BertEncoder(arch, self.dtype, self.remat, self.attention_impl, name="encoder")(
            constrain_hidden(x), inputs.attention_mask, inputs.deterministic, inputs.prefix_key_values,
            inputs.return_hidden_states
        )
        if not self.add_pooler:
            pooled = None
        elif inputs.num_segments:  # each packed example's [CLS]: (B, K, E)
            pooled = BertPooler(arch, self.dtype, name="pooler")(
                gather_segments(x, inputs.attention_mask, inputs.num_segments, last=False))
        else:
            pooled = BertPooler(arch, self.dtype, name="pooler")(x[:, 0])
        return BackboneOutput(x, all_hidden, pooled)


# BERT-layout destinations of one encoder layer, with BERT's (and RoBERTa's) HF module names.
ENCODER_LAYER = (
    (("attention", "self", "query"), "attention.self.query", "linear"),
    (("attention", "self", "key"), "attention.self.key", "linear"),
    (("attention", "self", "value"), "attention.self.value", "linear"),
    (("attention", "output", "dense"), "attention.output.dense", "linear"),
    (("attention", "output", "LayerNorm"), "attention.output.LayerNorm", "layernorm"),
    (("intermediate", "dense"), "intermediate.dense", "linear"),
    (("output", "dense"), "output.dense", "linear"),
    (("output", "LayerNorm"), "output.LayerNorm", "layernorm"),
)


def encoder_table(spec, layer_prefix: str = "encoder.layer", layer_names=ENCODER_LAYER,
                  sequence_head: tuple = ("classifier",)) -> dict[str, Entry]:
    """The table of an encoder on BERT's layout: ``layer_prefix.{i}.<name>`` for each ``layer_names`` row,
    the pooler when the task uses it, and the head (``sequence_head``: the HF module names of the sequence
    head, dotted names nest under ``head``; token classification is always ``classifier``)."""
    t: dict[str, Entry] = {}
    e = ("backbone", "embeddings")
    add_rows(t, "embeddings.word_embeddings", e + ("word_embeddings",), "embedding")
    add_rows(t, "embeddings.position_embeddings", e + ("position_embeddings",), "embedding")
    if spec.arch.type_vocab_size:
        add_rows(t, "embeddings.token_type_embeddings", e + ("token_type_embeddings",), "embedding")
    add_rows(t, "embeddings.LayerNorm", e + ("LayerNorm",), "layernorm")
    for i in range(spec.arch.num_layers):
        for path, name, kind in layer_names:
            add_rows(t, f"{layer_prefix}.{i}.{name}", ("backbone", "encoder", f"layer_{i}") + path, kind)
    if spec.uses_pooler:
        add_rows(t, "pooler.dense", ("backbone", "pooler", "dense"), "linear", role="optional")
    head = ("classifier",) if spec.task == "token_classification" else sequence_head
    for name in head:
        add_rows(t, name, ("head",) + tuple(name.split(".")), "linear", role="head")
    return t


def build_backbone(spec) -> BertBackbone:
    return BertBackbone(spec.arch, spec.uses_pooler, spec.compute_dtype, spec.remat, spec.attention_impl)


def build_head(spec) -> nn.Module:
    if spec.task == "token_classification":
        return TokenClassifier(spec.arch, spec.num_labels, spec.compute_dtype)
    return PooledClassifier(spec.arch, spec.num_labels, spec.compute_dtype)


OTHER_HEAD = "head of another task"
ENCODER_TARGETS = {
    "lora": r"attention/self/(query|key|value)$",
    "ia3": r"(attention/self/(key|value)|layer_\d+/output/dense)$",
    "ia3_feedforward": r"layer_\d+/output/dense$",
    "adapter_attention": r"attention/output/dense$",
    "adapter_ffn": r"layer_\d+/output/dense$",
}


def encoder_family(name: str, read: Callable, class_prefix: str, table: Callable, head: Callable,
                   ignored: tuple, **changes) -> Family:
    """The :class:`Family` of an encoder on these layers (``changes`` replace further Family fields)."""
    sequence = class_prefix + "ForSequenceClassification"
    return Family(
        name=name,
        is_decoder=False,
        read_arch=read,
        tensor_table=table,
        base_prefix=name + ".",
        build_backbone=build_backbone,
        build_head=head,
        architectures={"sequence_classification": sequence, "regression": sequence,
                       "token_classification": class_prefix + "ForTokenClassification"},
        peft_targets=ENCODER_TARGETS,
        embedding_path=("backbone", "embeddings", "word_embeddings", "embedding"),
        ignored=ignored,
        **changes,
    )


FAMILY = register(encoder_family(
    "bert", read_arch, "Bert", encoder_table, build_head,
    ignored=(
        (r"embeddings\.(position_ids|token_type_ids)", "index buffer"),
        (r"cls\..*", "pretraining (MLM/NSP) head"),
        (r"pooler\.dense\.(weight|bias)", "pooler not used by this task"),
        (r"classifier\.(weight|bias)", OTHER_HEAD),
        (r"qa_outputs\.(weight|bias)", OTHER_HEAD),
    ),
    # BertForSequenceClassification pools [CLS] through the pretrained pooler
    pooler_tasks=("sequence_classification", "regression"),
    bench_sizes={"bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, vocab_size=30522, max_position_embeddings=512)},
))
