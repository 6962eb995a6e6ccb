"""Causal language modelling: next-token cross-entropy; reported as loss and perplexity."""

from __future__ import annotations

import logging
import math
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from mgpt import losses
from mgpt.constants import IGNORE_INDEX
from mgpt.data import chat
from mgpt.data.encode import encode_causal_lm, pad_id
from mgpt.data.labels import LABEL_NONE
from mgpt.data.packing import pack_rows

logger = logging.getLogger("mgpt")


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL); exp overflows past ~709, and such a model has diverged anyway."""
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")


def _is_sum_and_count(value) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, (tuple, list)) and len(value) == 2 and all(np.ndim(v) == 0 for v in value)
    )


class CausalLM:
    """Task object for ``"causal_lm"``.

    :meth:`report` accepts either the summed next-token NLL and token count of a whole split
    (a ``(sum, count)`` pair, what :meth:`loss` returns added over batches, or a mapping with
    ``"nll_sum"`` and ``"token_count"``) -> ``{"loss", "perplexity", "num_tokens"}``; or the
    arg-max predictions (N, T) and the unshifted labels (N, T) -> next-token accuracy. In the
    second form :meth:`headline` derives perplexity from a ``"loss"`` the caller adds.
    """

    name = "causal_lm"
    head = "causal_lm"  # the model head load_pretrained builds
    single_label = False
    evaluation = "predict"  # evaluated from predict() over batches (mgpt.train.evaluation)
    default_metric = "loss"
    metric_names = ("loss", "perplexity", "token_accuracy")  # what an evaluation reports (the loss for every task)
    default_mode = "min"
    label_kind = LABEL_NONE  # no label; a text pair is the scored completion (mgpt.data.labels)

    def __init__(self, loss_chunk_size: int = 0):
        if loss_chunk_size < 0:
            raise ValueError(f"task.loss_chunk_size must be >= 0, got {loss_chunk_size}")
        # > 0: training asks the model for hidden states and runs the output projection chunk by chunk
        self.loss_chunk_size = int(loss_chunk_size)

    def encode(self, examples, tokenizer, data_cfg, label_to_id, *, split, where):
        """Token arrays of one split, labels = input ids (only the completion's with a text pair; only the
        assistant turns' with ``data.format="chat"``, rendered by the chat template, see mgpt.data.chat);
        with ``data.pack`` the train split is packed into full rows (evaluation stays one example per row)."""
        if data_cfg.format == "chat":
            encoded = chat.encode_chat(examples, tokenizer, data_cfg.max_length, where=where)
        elif data_cfg.use_chat_template:
            encoded = chat.encode_prompts_as_chat(examples, tokenizer, data_cfg.max_length, data_cfg.system_prompt,
                                                  where=where)
        else:
            encoded = encode_causal_lm(examples, tokenizer, data_cfg.max_length, where=where)
        if data_cfg.pack and split == "train":
            encoded.arrays = pack_rows(encoded.arrays, data_cfg.max_length, pad_id(tokenizer))
            logger.info("%s: packed %d examples into %d rows of %d tokens", where, len(examples),
                        len(encoded.arrays["input_ids"]), data_cfg.max_length)
        return encoded

    def loss(self, logits, batch):
        """(sum, count) of next-token cross-entropy; labels (B, T) unshifted, -100 ignored."""
        return losses.causal_lm_loss(logits, batch["labels"], batch.get("example_weight"))

    def loss_from_hidden(self, hidden, project, batch):
        """The same (sum, count) from final hidden states and the output projection ``project``,
        ``loss_chunk_size`` positions at a time (see :func:`mgpt.losses.chunked_causal_lm_loss`)."""
        return losses.chunked_causal_lm_loss(hidden, project, batch["labels"], batch.get("example_weight"),
                                             self.loss_chunk_size)

    def predict(self, logits, batch):
        """Arg-max next token at every position (B, T): position t predicts token t + 1."""
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def decode(self, predictions, data, split):
        return np.asarray(predictions)

    def references(self, data, split):
        """The unshifted labels (N, T) of ``split``."""
        return np.asarray(data.splits[split]["labels"])

    def describe(self, prediction, label_names=()):
        return [int(t) for t in np.asarray(prediction).reshape(-1)]

    def report(self, predictions, references=None, label_names=()):
        if _is_sum_and_count(predictions):
            if isinstance(predictions, Mapping):
                total, count = predictions["nll_sum"], predictions["token_count"]
            else:
                total, count = predictions
            total, count = float(total), float(count)
            if count <= 0:
                raise ValueError("causal_lm report: no scored tokens (token count is 0)")
            return {"loss": total / count, "perplexity": perplexity(total / count), "num_tokens": int(round(count))}
        pred = np.asarray(predictions)[:, :-1]
        target = np.asarray(references)[:, 1:]
        scored = target != IGNORE_INDEX
        num_tokens = int(scored.sum())
        correct = int(np.sum((pred == target) & scored))
        return {"token_accuracy": correct / num_tokens if num_tokens else 0.0, "num_tokens": num_tokens}

    def headline(self, report):
        out = {}
        if "loss" in report:
            out["loss"] = float(report["loss"])
            out["perplexity"] = perplexity(out["loss"])
        if "token_accuracy" in report:
            out["token_accuracy"] = float(report["token_accuracy"])
        return out
