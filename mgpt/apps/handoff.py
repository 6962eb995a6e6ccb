"""Choosing an assistant's hand-off threshold on held-out data: the pure part.

An assistant answers a question from its top intent's template when the model's probability for that
intent reaches a threshold, and hands the question to a person otherwise. Raising the threshold answers
fewer questions (coverage) and gets more of the answered ones right (answered accuracy). Given the held-out
confidences and whether each top intent was right, :func:`choose_threshold` returns the lowest threshold
whose answered accuracy reaches a target, which is the one that answers the most questions at that accuracy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mgpt.data.errors import DataError


def coverage_curve(confidence: Sequence[float], correct: Sequence[bool]) -> list[dict]:
    """For each distinct confidence ``t`` (highest first): the share of questions answered at threshold ``t``
    (confidence >= t) and the accuracy of those answered."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or not len(confidence):
        raise DataError(f"expected one confidence and one correct flag per question, got {confidence.shape} "
                        f"and {correct.shape}")
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence, hits = confidence[order], np.cumsum(correct[order])
    # a threshold answers every question tied at it: the last position of each run of equal confidences
    last = np.flatnonzero(np.append(sorted_confidence[1:] != sorted_confidence[:-1], True))
    total = len(confidence)
    return [{"threshold": float(sorted_confidence[i]), "coverage": (i + 1) / total,
             "accuracy": float(hits[i]) / (i + 1)} for i in last]


def choose_threshold(confidence: Sequence[float], correct: Sequence[bool], target_accuracy: float) -> dict:
    """The lowest threshold at which the answered questions are at least ``target_accuracy`` right, with its
    coverage and accuracy; fails when no threshold reaches the target."""
    if not 0.0 < target_accuracy <= 1.0:
        raise DataError(f"target accuracy must be in (0, 1], got {target_accuracy}")
    curve = coverage_curve(confidence, correct)
    reaching = [point for point in curve if point["accuracy"] >= target_accuracy]
    if not reaching:
        best = max(curve, key=lambda point: point["accuracy"])
        raise DataError(f"no threshold reaches answered accuracy {target_accuracy}: the best is "
                        f"{best['accuracy']:.3f} (threshold {best['threshold']:.3f}); lower the target")
    chosen = max(reaching, key=lambda point: point["coverage"])
    return dict(chosen, target_accuracy=target_accuracy, num_questions=len(confidence))
