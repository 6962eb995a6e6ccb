"""Generation: trained as causal language modelling on the target, evaluated by generating.

Examples come from the causal-LM data path (``data.prompt_template`` / ``text_column`` renders the prompt,
``data.target_column`` holds the reference; only the target's tokens are scored in training), or are
conversations (``data.format="chat"``, :mod:`mgpt.data.chat`): trained on every assistant turn, the prompt
is the conversation before its last assistant message rendered by the chat template, handed over as
token ids (it holds its special tokens already), and the reference is that message's content. The task
declares ``evaluation = "generate"``: the trainer's evaluator (:mod:`mgpt.train.generation_eval`) decodes a
completion from every prompt of :meth:`Generation.prompts` with the KV-cache decoder and hands the texts and
:meth:`Generation.references` to :meth:`Generation.report` (``task.generation_metrics``, see
:mod:`mgpt.text_metrics`); the teacher-forced loss and perplexity come too.
"""

from __future__ import annotations

from typing import Sequence

from mgpt import text_metrics
from mgpt.data import chat
from mgpt.tasks.causal_lm import CausalLM, perplexity

HEADLINE_KEYS = text_metrics.ROUGE_TYPES + ("bleu", "chrf", "exact_match", "token_f1")


class Generation(CausalLM):
    """Task object for ``"generation"``: the causal-LM loss; evaluated on generated text, not per-batch arg-max."""

    name = "generation"
    head = "causal_lm"  # the model head load_pretrained builds
    evaluation = "generate"  # evaluated on completions decoded from prompts() (mgpt.train.generation_eval)
    default_metric = "loss"  # always present; pick e.g. train.best_metric="validation/rougeL" to select by text
    metric_names = ("loss", "perplexity")  # plus the text metrics of task.generation_metrics (rouge: rouge1/2/L)
    default_mode = "min"

    def decode(self, predictions, data, split):
        return list(predictions)

    def prompts(self, data, split) -> list:
        """What generation continues, per example of ``split``: the rendered prompt text, or for chat data
        the token ids of the chat-template rendering (:func:`mgpt.generate.encode_prompts` takes both)."""
        if split in data.prompt_ids:
            return list(data.prompt_ids[split])
        return [e["text"] for e in data.examples[split]]

    def references(self, data, split) -> list[str]:
        """The target text of every example of ``split`` (a chat's last assistant message); fails when the
        data has no target field."""
        examples = data.examples[split]
        if examples and "messages" in examples[0]:
            texts = [chat.reference(e["messages"]) for e in examples]
            missing = [i for i, text in enumerate(texts) if text is None]
            if missing:
                raise ValueError(f"{examples[missing[0]]['where']}: generation needs a reference; this "
                                 "conversation has no assistant message")
            return texts
        missing = [i for i, e in enumerate(examples) if "text_pair" not in e]
        if missing:
            raise ValueError(f"{split} ({data.files.get(split)}): generation needs a reference target per example; "
                             f"example {missing[0]} has none (set data.target_column to the answer's field)")
        return [e["text_pair"] for e in examples]

    def describe(self, prediction, label_names=()):
        """A prediction file's entry: the generated text."""
        return prediction

    def report(self, predictions: Sequence[str], references: Sequence[str], label_names=(),
               metrics: Sequence[str] = text_metrics.METRICS) -> dict:
        """``metrics`` of generated ``predictions`` against ``references`` (see :mod:`mgpt.text_metrics`)."""
        return text_metrics.text_report(predictions, references, metrics)

    def headline(self, report):
        out = {key: float(report[key]) for key in HEADLINE_KEYS if key in report}
        if "loss" in report:
            out["loss"] = float(report["loss"])
            out["perplexity"] = perplexity(out["loss"])
        return out
