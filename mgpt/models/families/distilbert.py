"""DistilBERT on BERT's layers: no token types, no dropout after the attention output projection, its own
tensor names (``transformer.layer.{i}.attention.q_lin`` ...) and sequence head (``pre_classifier`` -> ReLU ->
dropout -> ``classifier`` on [CLS])."""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn

from mgpt.models.families import bert
from mgpt.models.family import register
from mgpt.models.heads import FirstTokenClassifier, TokenClassifier

# BERT-layout destinations of one layer with DistilBERT's module names.
LAYER_NAMES = (
    (("attention", "self", "query"), "attention.q_lin", "linear"),
    (("attention", "self", "key"), "attention.k_lin", "linear"),
    (("attention", "self", "value"), "attention.v_lin", "linear"),
    (("attention", "output", "dense"), "attention.out_lin", "linear"),
    (("attention", "output", "LayerNorm"), "sa_layer_norm", "layernorm"),
    (("intermediate", "dense"), "ffn.lin1", "linear"),
    (("output", "dense"), "ffn.lin2", "linear"),
    (("output", "LayerNorm"), "output_layer_norm", "layernorm"),
)


def read_arch(config, dropout: Optional[float] = None) -> bert.BertArch:
    """Read a ``DistilBertConfig``; sinusoidal position embeddings (frozen in PyTorch) are refused."""
    if getattr(config, "sinusoidal_pos_embds", False):
        raise ValueError(
            "DistilBERT config: sinusoidal_pos_embds=True is not supported by mgpt (the table is frozen in "
            "PyTorch and would be trained here); use a checkpoint with learned position embeddings"
        )
    if config.dim % config.n_heads:
        raise ValueError(f"DistilBERT config: dim={config.dim} is not divisible by n_heads={config.n_heads}")
    rates = dict(hidden_dropout=config.dropout, attention_dropout=config.attention_dropout,
                 classifier_dropout=config.dropout, sequence_classifier_dropout=config.seq_classif_dropout)
    return bert.encoder_arch(
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        num_layers=config.n_layers,
        num_heads=config.n_heads,
        intermediate_size=config.hidden_dim,
        activation=config.activation,
        norm_eps=1e-12,  # hard-coded in DistilBERT
        max_positions=config.max_position_embeddings,
        type_vocab_size=0,
        initializer_range=config.initializer_range,
        attention_output_dropout=False,
        rates=rates,
        dropout=dropout,
    )


def build_head(spec) -> nn.Module:
    if spec.task == "token_classification":
        return TokenClassifier(spec.arch, spec.num_labels, spec.compute_dtype)
    return FirstTokenClassifier(spec.arch, spec.num_labels, spec.compute_dtype, names=("pre_classifier", "classifier"),
                                activation="relu", dropout_rate=spec.arch.sequence_classifier_dropout)


FAMILY = register(bert.encoder_family(
    "distilbert", read_arch, "DistilBert",
    functools.partial(bert.encoder_table, layer_prefix="transformer.layer", layer_names=LAYER_NAMES,
                      sequence_head=("pre_classifier", "classifier")),
    build_head,
    ignored=(
        (r"embeddings\.position_ids", "index buffer"),
        (r"vocab_(transform|layer_norm|projector)\.(weight|bias)", "pretraining (MLM) head"),
        (r"(pre_classifier|classifier|qa_outputs)\.(weight|bias)", bert.OTHER_HEAD),
    ),
))
