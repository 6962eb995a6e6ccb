"""DistilBERT on BERT's layers: no token types, no dropout after the attention output projection, its own
tensor names (``transformer.layer.{i}.attention.q_lin`` ...) and sequence head (``pre_classifier`` -> ReLU ->
dropout -> ``classifier`` on [CLS])."""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn

from mgpt.models.families import bert
from mgpt.models.family import config_fields, register
from mgpt.models.heads import FirstTokenClassifier, TokenClassifier

# DistilBERT's name for each of BERT's per-layer modules.
RENAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
LAYER_NAMES = tuple((path, RENAMES[name], kind) for path, name, kind in bert.ENCODER_LAYER)


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
    names = config_fields(config, vocab_size="vocab_size", hidden_size="dim", num_layers="n_layers",
                          num_heads="n_heads", intermediate_size="hidden_dim", activation="activation",
                          max_positions="max_position_embeddings", initializer_range="initializer_range")
    # no token types; LayerNorm eps hard-coded in DistilBERT
    return bert.encoder_arch(norm_eps=1e-12, type_vocab_size=0, attention_output_dropout=False, rates=rates,
                             dropout=dropout, **names)


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
