"""``mgpt handoff``: choose the customer-service assistant's hand-off threshold on a run's held-out split.

The run's classifier scores every question of the split (validation by default: the test split stays
untouched); the threshold is the lowest confidence at which the answered questions reach the target
accuracy (:func:`mgpt.apps.handoff.choose_threshold`). It is written as ``handoff.json`` in the run's
workdir, where ``mgpt serve`` reads it for ``/v1/assist``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mgpt.apps import handoff
from mgpt.data.errors import DataError
from mgpt.train import evaluation, scoring, setup

HANDOFF_FILE = "handoff.json"


def run_workdir(checkpoint: str) -> str:
    """The workdir of ``checkpoint`` (a workdir, or its ``best/`` or ``checkpoints/`` directory)."""
    path = os.path.normpath(checkpoint)
    return os.path.dirname(path) if os.path.basename(path) in ("best", "checkpoints") else path


def choose_handoff(config, checkpoint: str, target_accuracy: float, split: str = "validation",
                   output: str | None = None) -> dict:
    """Score ``split`` with the run's classifier, choose the threshold, write it (default: the workdir's
    ``handoff.json``) and return what was written."""
    run, params, where = setup.load_for_inference(config, checkpoint)
    examples = run.data.examples.get(split)
    if not examples:
        raise DataError(f"{config.name}: the run's data has no {split!r} split to choose a threshold on "
                        f"(splits: {sorted(k for k, v in run.data.examples.items() if v)})")
    names = list(run.data.label_names)
    probabilities = scoring.class_probabilities(run, params, split)
    top = probabilities.argmax(axis=1)
    correct = np.array([names[i] == example["label"] for i, example in zip(top, examples)])
    chosen = handoff.choose_threshold(probabilities.max(axis=1), correct, target_accuracy)
    curve = handoff.coverage_curve(probabilities.max(axis=1), correct)
    result = dict(chosen, split=split, checkpoint=where, overall_accuracy=float(correct.mean()),
                  curve=_thinned(curve))
    path = output or os.path.join(run_workdir(checkpoint), HANDOFF_FILE)
    evaluation.write_json(path, result)
    result["path"] = path
    return result


def read_threshold(checkpoint: str | None) -> float | None:
    """The threshold ``mgpt handoff`` wrote for this run, or None when it has not been run."""
    if not checkpoint:
        return None
    path = os.path.join(run_workdir(checkpoint), HANDOFF_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return float(json.load(f)["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: expected the JSON that mgpt handoff writes, with a numeric 'threshold': "
                        f"{error}") from None


def _thinned(curve: list[dict], points: int = 21) -> list[dict]:
    """At most ``points`` points of the curve, evenly spaced in coverage (the file stays readable)."""
    if len(curve) <= points:
        return curve
    picks = np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))
    return [curve[i] for i in picks]
