"""Metrics of generated text against references: the field's libraries, plus SQuAD's answer matching.

* BLEU and chrF: ``sacrebleu`` corpus scores (0-100, its default 13a tokenisation and settings);
* ROUGE-1/2/L: ``rouge-score`` F-measures (0-1, Porter stemming), averaged over examples;
* exact match and token F1 (0-1): the SQuAD v1.1 definitions, written here because no installed library
  computes them without downloading an evaluation script.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

METRICS = ("rouge", "bleu", "chrf", "exact_match", "token_f1")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_PUNCTUATION = frozenset(string.punctuation)


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    """The metric names, each checked against :data:`METRICS`."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"task.generation_metrics: unknown {unknown}; choose from {', '.join(METRICS)}")
    return tuple(names)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lower case, drop punctuation and the articles a/an/the, squeeze spaces.

    Definition from the official SQuAD v1.1 evaluation script (Rajpurkar et al., 2016, "SQuAD: 100,000+
    Questions for Machine Comprehension of Text"), whose ``normalize_answer`` applies these four steps.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal (SQuAD exact match), else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the normalised tokens' multiset overlap.

    As SQuAD v2.0's script, two empty answers match (1.0) and one empty answer scores 0.0.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure over examples (``rouge_score.rouge_scorer`` with stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # (target, prediction) order
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: total / max(len(predictions), 1) for name, total in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) with one reference per example."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus chrF (0-100) with one reference per example."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def text_report(predictions: Sequence[str], references: Sequence[str], metrics: Sequence[str] = METRICS) -> dict:
    """The chosen metrics of ``predictions`` against ``references`` (equal length), as plain floats."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    report: dict[str, float] = {}
    count = max(len(predictions), 1)
    for name in check_metrics(metrics):
        if name == "rouge":
            report.update(rouge(predictions, references))
        elif name == "bleu":
            report["bleu"] = bleu(predictions, references)
        elif name == "chrf":
            report["chrf"] = chrf(predictions, references)
        elif name == "exact_match":
            report["exact_match"] = sum(map(exact_match, predictions, references)) / count
        elif name == "token_f1":
            report["token_f1"] = sum(map(token_f1, predictions, references)) / count
    return report
