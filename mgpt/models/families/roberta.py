"""RoBERTa on BERT's layers: position ids from ``padding_idx + 1`` (skipping padding) and its own
sequence head (dropout -> ``dense`` -> tanh -> dropout -> ``out_proj`` on <s>, under ``classifier``)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import flax.linen as nn

from mgpt.models.families import bert
from mgpt.models.family import register
from mgpt.models.heads import FirstTokenClassifier, TokenClassifier


def read_arch(config, dropout: Optional[float] = None) -> bert.BertArch:
    """Read a ``RobertaConfig`` (BERT's fields, plus position ids offset by ``pad_token_id``)."""
    if config.pad_token_id is None:
        raise ValueError("RoBERTa config: pad_token_id is needed to build position ids")
    return dataclasses.replace(bert.read_arch(config, dropout), position_padding_idx=int(config.pad_token_id))


def build_head(spec) -> nn.Module:
    if spec.task == "token_classification":
        return TokenClassifier(spec.arch, spec.num_labels, spec.compute_dtype)
    return FirstTokenClassifier(spec.arch, spec.num_labels, spec.compute_dtype, names=("dense", "out_proj"),
                                activation="tanh", dropout_rate=spec.arch.classifier_dropout, dropout_first=True,
                                group="classifier")


FAMILY = register(bert.encoder_family(
    "roberta", read_arch, "Roberta",
    functools.partial(bert.encoder_table, sequence_head=("classifier.dense", "classifier.out_proj")), build_head,
    ignored=(
        (r"embeddings\.(position_ids|token_type_ids)", "index buffer"),
        (r"lm_head\..*", "pretraining (MLM) head"),
        (r"pooler\.dense\.(weight|bias)", "pooler not used by RoBERTa heads"),
        (r"classifier\.(weight|bias|dense\.weight|dense\.bias|out_proj\.weight|out_proj\.bias)", bert.OTHER_HEAD),
        (r"qa_outputs\.(weight|bias)", bert.OTHER_HEAD),
    ),
))
