"""Evaluation by generation: decode a completion per prompt, score the texts with the task.

For tasks that declare ``evaluation = "generate"`` (:class:`mgpt.tasks.Generation`). The run supplies the
model, tokenizer, mesh and decode settings (``task.max_new_tokens`` / ``temperature`` / ``top_k`` /
``top_p`` / ``decode_seed``); the task supplies the prompts and references of a split and turns the
generated texts into its report. :mod:`mgpt.train.evaluation` dispatches here. A task's prompt is text, or
token ids already rendered (chat data: the chat template wrote its special tokens; see :mod:`mgpt.data.chat`).
"""

from __future__ import annotations

from typing import Any

from mgpt import generate, text_metrics


def generate_split(run, params: Any, split: str) -> list[str]:
    """One generated completion per example of ``split``, decoded with the run's ``task`` settings."""
    return _generate(run, params, run.task.prompts(run.data, split))


def _generate(run, params: Any, prompts: list[str]) -> list[str]:
    cfg = run.config.task
    settings = generate.settings_for(run.tokenizer, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    return generate.generate_text(run.model, params, run.tokenizer, prompts, settings,
                                  batch_size=run.config.train.eval_batch_size, seed=cfg.decode_seed, mesh=run.mesh)


def evaluate_by_generation(run, params: Any, split: str, loss_sum: float, count: float
                           ) -> tuple[dict, dict[str, float]]:
    """``(report, scalars)`` of ``split``: the task's text metrics of generated completions, with the
    teacher-forced loss (``loss_sum`` over ``count`` target tokens, from the per-batch evaluation) and perplexity.
    """
    cfg, task = run.config.task, run.task
    metric_names = text_metrics.check_metrics(cfg.generation_metrics)
    prompts, references = task.prompts(run.data, split), task.references(run.data, split)
    generated = _generate(run, params, prompts)
    report = task.report(generated, references, metrics=metric_names)
    report["loss"] = loss_sum / max(count, 1.0)
    report["num_examples"] = len(generated)
    report["num_tokens"] = int(round(count))
    report["decoding"] = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                          "top_k": cfg.top_k, "top_p": cfg.top_p, "seed": cfg.decode_seed}
    scalars = task.headline(report)
    report.update(scalars)
    report["generations"] = [{"prompt": prompt_text(run.tokenizer, prompt), "prediction": p, "reference": r}
                             for prompt, p, r in zip(prompts, generated, references)]
    return report, scalars


def prompt_text(tokenizer, prompt) -> str:
    """A prompt as the report shows it: the text itself, or token ids (a chat rendering) decoded with
    their special tokens."""
    return prompt if isinstance(prompt, str) else tokenizer.decode(list(prompt), skip_special_tokens=False)
