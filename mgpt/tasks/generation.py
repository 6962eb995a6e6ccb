"""Generation: trained as causal language modelling on the target, evaluated by generating.

Examples come from the causal-LM data path (``data.prompt_template`` / ``text_column`` renders the prompt,
``data.target_column`` holds the reference; only the target's tokens are scored in training). Evaluation
decodes a completion from every prompt with the KV-cache decoder (:mod:`mgpt.generate`; settings from
``task.max_new_tokens`` / ``temperature`` / ``top_k`` / ``top_p``) and scores it against the reference with
``task.generation_metrics`` (:mod:`mgpt.text_metrics`); the teacher-forced loss and perplexity come too.
"""

from __future__ import annotations

from typing import Sequence

from mgpt import text_metrics
from mgpt.tasks.causal_lm import CausalLM, perplexity

HEADLINE_KEYS = text_metrics.ROUGE_TYPES + ("bleu", "chrf", "exact_match", "token_f1")


class Generation(CausalLM):
    """Task object for ``"generation"``: the causal-LM loss, and :meth:`evaluate` / :meth:`predict_split`
    that the trainer's evaluator and ``mgpt predict`` call instead of the per-batch arg-max path."""

    name = "generation"
    head = "causal_lm"  # the model head load_pretrained builds
    default_metric = "loss"  # always present; pick e.g. train.best_metric="validation/rougeL" to select by text
    metric_names = ("loss", "perplexity")  # plus the text metrics of task.generation_metrics (rouge: rouge1/2/L)
    default_mode = "min"

    def decode(self, predictions, data, split):
        return list(predictions)

    def references(self, data, split) -> list[str]:
        """The target text of every example of ``split``; fails when the data has no target field."""
        examples = data.examples[split]
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

    def predict_split(self, run, params, split: str) -> list[str]:
        """One generated completion per example of ``split``, decoded with the run's ``task`` settings."""
        from mgpt import generate

        cfg = run.config.task
        settings = generate.settings_for(run.tokenizer, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
        prompts = [e["text"] for e in run.data.examples[split]]
        return generate.generate_text(run.model, params, run.tokenizer, prompts, settings,
                                      batch_size=run.config.train.eval_batch_size, seed=cfg.decode_seed,
                                      mesh=run.mesh)

    def evaluate(self, run, params, split: str) -> tuple[dict, dict[str, float]]:
        """``(report, scalars)`` of ``split``: text metrics of generated completions, loss and perplexity."""
        from mgpt.train.evaluation import run_predictions

        cfg = run.config.task
        metrics = text_metrics.check_metrics(cfg.generation_metrics)
        references = self.references(run.data, split)
        generated = self.predict_split(run, params, split)
        _, loss_sum, count = run_predictions(run, params, split)  # teacher-forced loss on the targets
        report = self.report(generated, references, metrics=metrics)
        report["loss"] = loss_sum / max(count, 1.0)
        report["num_examples"] = len(generated)
        report["num_tokens"] = int(round(count))
        report["decoding"] = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                              "top_k": cfg.top_k, "top_p": cfg.top_p, "seed": cfg.decode_seed}
        scalars = self.headline(report)
        report.update(scalars)
        report["generations"] = [{"prompt": e["text"], "prediction": p, "reference": r}
                                 for e, p, r in zip(run.data.examples[split], generated, references)]
        return report, scalars
