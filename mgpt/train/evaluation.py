"""Evaluation over a whole split, the written reports, and prediction files."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np

from mgpt import metrics, parallel
from mgpt.train import generation_eval
from mgpt.train.progress import progress_bar

logger = logging.getLogger("mgpt")

EVALUATIONS = ("predict", "generate")  # what a task may declare as its ``evaluation``


def run_predictions(run, params: Any, split: str) -> tuple[np.ndarray, float, float]:
    """Predictions for every real example of ``split`` in file order (padding rows dropped), loss sum and count.

    Batches may come longest first and cut to bucket lengths (``data.padding="buckets"``): per-token
    predictions are padded back to the split's full length (with 0) and every row is put back in its place.
    """
    batches = run.batches(split, run.config.train.eval_batch_size, shuffle=False)
    per_token = "labels" in batches.token_keys
    full_width = batches.arrays["input_ids"].shape[1]
    outputs, loss_sum, count = [], 0.0, 0.0
    progress = progress_bar(run.config.train.progress_bar, len(batches), split, leave=False)
    for batch in batches.eval_batches(jax.process_index(), jax.process_count()):
        sharded = parallel.shard_batch(batch, run.mesh)
        # Every process gets every prediction (and the global weights that mark padding rows).
        result, weights = parallel.to_host((run.eval_fn(params, sharded), sharded["example_weight"]))
        loss_sum += float(result["loss_sum"])
        count += float(result["count"])
        predictions = np.asarray(result["predictions"])[weights > 0]
        if per_token and predictions.shape[1] < full_width:
            pad = [(0, 0), (0, full_width - predictions.shape[1])] + [(0, 0)] * (predictions.ndim - 2)
            predictions = np.pad(predictions, pad)
        outputs.append(predictions)
        progress.update(1)
    progress.close()
    in_eval_order = np.concatenate(outputs, axis=0)
    in_file_order = np.empty_like(in_eval_order)
    in_file_order[batches.eval_order()] = in_eval_order
    return in_file_order, loss_sum, count


def evaluate_split(run, params: Any, split: str) -> tuple[dict, dict[str, float]]:
    """The task's full report on ``split`` and the scalars to log (loss included).

    The task declares how it is evaluated (``task.evaluation``): ``"predict"`` reports the per-batch
    predictions of the whole split; ``"generate"`` reports generated text (:mod:`mgpt.train.generation_eval`).
    Both report the loss of the per-batch path (teacher-forced for generation).
    """
    _check_evaluation(run.task)
    predictions, loss_sum, count = run_predictions(run, params, split)
    if run.task.evaluation == "generate":
        return generation_eval.evaluate_by_generation(run, params, split, loss_sum, count)
    decoded = run.task.decode(predictions, run.data, split)
    references = run.task.references(run.data, split)
    report = run.task.report(decoded, references, run.data.label_names)
    collapsed = metrics.single_predicted_label(decoded, references) if run.task.single_label else None
    if collapsed is not None:
        name = run.data.label_names[collapsed] if isinstance(collapsed, int) else collapsed
        logger.warning("%s: every prediction is %r although the references hold other labels: the model is "
                       "not using its input (too early in training, or collapsed: check the learning rate)", split, name)
        report["single_predicted_label"] = name
    report["loss"] = loss_sum / max(count, 1.0)
    report["num_examples"] = int(len(predictions))
    scalars = dict(run.task.headline(report))
    scalars["loss"] = report["loss"]
    report.update(scalars)  # derived scalars (e.g. perplexity from the loss) belong in the report too
    return report, scalars


def evaluate_with_perturbations(run, params: Any, split: str) -> tuple[dict, dict[str, float]]:
    """:func:`evaluate_split` of ``split`` and of its perturbed copies (``train.eval_perturbations``, built by
    :func:`mgpt.data.augmented.add_perturbed_splits`); returns the report and the scalars by full name.

    Scalars: ``<split>/<metric>`` as ever, plus for each copy ``<split>@<op>:<rate>/<metric>`` and
    ``<split>@<op>:<rate>/<metric>_drop`` (clean minus perturbed). The report is the clean one with those
    perturbed scalars added and each copy's full report under ``"perturbations"``, keyed by its spec.
    """
    report, scalars = evaluate_split(run, params, split)
    headline = {f"{split}/{metric}": value for metric, value in scalars.items()}
    copies = getattr(run.data, "perturbed", {}).get(split, {})
    if not copies:
        return report, headline
    report["perturbations"] = {}
    for spec, name in copies.items():
        perturbed_report, perturbed = evaluate_split(run, params, name)
        for metric, value in perturbed.items():
            headline[f"{name}/{metric}"] = value
            if metric in scalars:
                perturbed_report[f"{metric}_drop"] = headline[f"{name}/{metric}_drop"] = scalars[metric] - value
        report["perturbations"][spec] = perturbed_report
    report.update({key: value for key, value in headline.items() if "@" in key})
    return report, headline


def write_report(workdir: str, split: str, report: dict) -> str:
    """Write ``eval_<split>.json`` into ``workdir``."""
    return write_json(os.path.join(workdir, f"eval_{split}.json"), report)


def write_json(path: str, payload: Any) -> str:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
    os.replace(tmp, path)
    return path


def write_predictions(run, params: Any, split: str, path: str) -> int:
    """One JSON object per example: the input fields and the prediction. Returns the count.

    The predictions are what the task is evaluated on: decoded per-batch predictions, or generated texts.
    """
    _check_evaluation(run.task)
    if run.task.evaluation == "generate":
        decoded = generation_eval.generate_split(run, params, split)
    else:
        predictions, _, _ = run_predictions(run, params, split)
        decoded = run.task.decode(predictions, run.data, split)
    examples = run.data.examples[split]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for example, prediction in zip(examples, decoded):
            record = {k: v for k, v in example.items()}
            record["prediction"] = run.task.describe(prediction, run.data.label_names)
            f.write(json.dumps(record, default=_json_default) + "\n")
    os.replace(tmp, path)
    return len(examples)


def _check_evaluation(task) -> None:
    if task.evaluation not in EVALUATIONS:
        raise ValueError(f"task {task.name!r} declares evaluation={task.evaluation!r}; "
                         f"expected one of {', '.join(EVALUATIONS)}")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
