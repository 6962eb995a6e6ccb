"""Causal language modelling: next-token cross-entropy; reported as loss and perplexity."""

from __future__ import annotations

import math
from typing import Mapping

import jax.numpy as jnp

from mgpt import losses


class CausalLM:
    """Task object for ``"causal_lm"``.

    ``report`` takes the summed next-token NLL and the token count of a whole split, either as a
    ``(sum, count)`` pair (what :meth:`loss` returns, added over batches) or a mapping with
    ``"nll_sum"`` and ``"token_count"``; references and label names are unused.
    """

    name = "causal_lm"
    default_metric = "loss"
    default_mode = "min"

    def loss(self, logits, batch):
        """(sum, count) of next-token cross-entropy; labels (B, T) unshifted, -100 ignored."""
        return losses.causal_lm_loss(logits, batch["labels"], batch.get("example_weight"))

    def predict(self, logits, batch):
        """Arg-max next token at every position (B, T): position t predicts token t + 1."""
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def report(self, predictions, references=None, label_names=()):
        if isinstance(predictions, Mapping):
            total, count = predictions["nll_sum"], predictions["token_count"]
        else:
            total, count = predictions
        total, count = float(total), float(count)
        if count <= 0:
            raise ValueError("causal_lm report: no scored tokens (token count is 0)")
        loss = total / count
        # exp overflows past ~709; such a model is diverged anyway.
        perplexity = math.exp(loss) if loss < 700 else float("inf")
        return {"loss": loss, "perplexity": perplexity, "num_tokens": int(round(count))}

    def headline(self, report):
        return {"loss": float(report["loss"]), "perplexity": float(report["perplexity"])}
