"""Host-side evaluation reports built on scikit-learn, seqeval and scipy.

Every report is plain JSON-ready data (python floats, ints, lists, dicts). Undefined values
(e.g. a correlation of constant predictions) are ``None``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _plain(value):
    """numpy scalars / arrays / nested containers -> python; nan -> None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) else value
    return value


def _rename_f1(scores: dict) -> dict:
    """sklearn / seqeval write "f1-score"; mgpt reports use "f1"."""
    return {("f1" if k == "f1-score" else k): v for k, v in scores.items()}


def classification_report(pred_ids, ref_ids, label_names: Sequence[str]) -> dict:
    """Accuracy, macro / micro / weighted F1, per-class scores and the confusion matrix.

    ``confusion_matrix[i][j]`` counts references of class i predicted as class j, in
    ``label_names`` order.
    """
    from sklearn import metrics as skm

    pred = np.asarray(pred_ids).reshape(-1)
    ref = np.asarray(ref_ids).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions {pred.shape} and references {ref.shape} differ in length")
    ids = list(range(len(label_names)))
    report = skm.classification_report(
        ref, pred, labels=ids, target_names=list(label_names), output_dict=True, zero_division=0
    )
    per_class = {name: _rename_f1(report[name]) for name in label_names}
    return _plain(
        {
            "accuracy": skm.accuracy_score(ref, pred),
            "macro_f1": skm.f1_score(ref, pred, labels=ids, average="macro", zero_division=0),
            "micro_f1": skm.f1_score(ref, pred, labels=ids, average="micro", zero_division=0),
            "weighted_f1": skm.f1_score(ref, pred, labels=ids, average="weighted", zero_division=0),
            "per_class": per_class,
            "labels": list(label_names),
            "confusion_matrix": skm.confusion_matrix(ref, pred, labels=ids),
            "num_examples": len(ref),
        }
    )


def entity_report(pred_tags: Sequence[Sequence[str]], ref_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level scores with seqeval (strict mode, IOB2): an entity counts only if its type
    and exact span match. Overall precision / recall / f1 are micro averages; ``accuracy`` is
    token accuracy."""
    from seqeval import metrics as sq
    from seqeval.scheme import IOB2

    pred = [list(p) for p in pred_tags]
    ref = [list(r) for r in ref_tags]
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predicted sentences but {len(ref)} reference sentences")
    for i, (p, r) in enumerate(zip(pred, ref)):
        if len(p) != len(r):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(r)} reference tags")
    strict = dict(mode="strict", scheme=IOB2, zero_division=0)
    report = sq.classification_report(ref, pred, output_dict=True, **strict)
    averages = {"micro avg": "micro", "macro avg": "macro", "weighted avg": "weighted"}
    per_type = {k: _rename_f1(v) for k, v in report.items() if k not in averages}
    out = {
        "precision": sq.precision_score(ref, pred, average="micro", **strict),
        "recall": sq.recall_score(ref, pred, average="micro", **strict),
        "f1": sq.f1_score(ref, pred, average="micro", **strict),
        "accuracy": sq.accuracy_score(ref, pred),
        "per_type": per_type,
    }
    for key, name in averages.items():
        if key in report:
            out[name] = _rename_f1(report[key])
    return _plain(out)


def single_predicted_label(predictions, references):
    """The one label every prediction carries when the references hold more than one, else None.

    Catches a collapsed classifier (all ``O`` in NER, one class everywhere): its report otherwise
    reads like a run that merely scored low. ``predictions`` / ``references``: label ids or tag
    names, either flat (one per example) or one sequence per example.
    """
    def labels(values) -> set:
        found = set()
        for value in values:
            if isinstance(value, (list, tuple, np.ndarray)):
                found.update(np.asarray(value).ravel().tolist())
            else:
                found.add(value.item() if isinstance(value, np.generic) else value)
        return found

    predicted = labels(predictions)
    if len(predicted) == 1 and len(labels(references)) > 1:
        return next(iter(predicted))
    return None


def regression_report(predictions, references) -> dict:
    """MSE, RMSE, MAE and Pearson / Spearman correlation (None when undefined)."""
    from scipy import stats

    pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    ref = np.asarray(references, dtype=np.float64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions {pred.shape} and references {ref.shape} differ in length")
    if pred.size == 0:
        raise ValueError("regression_report needs at least one example")
    error = pred - ref
    mse = float(np.mean(np.square(error)))
    # Correlations are undefined for constant inputs (scipy warns and returns nan).
    constant = pred.size < 2 or np.ptp(pred) == 0 or np.ptp(ref) == 0
    pearson = None if constant else stats.pearsonr(pred, ref)[0]
    spearman = None if constant else stats.spearmanr(pred, ref)[0]
    return _plain(
        {
            "mse": mse,
            "rmse": math.sqrt(mse),
            "mae": float(np.mean(np.abs(error))),
            "pearson": pearson,
            "spearman": spearman,
            "num_examples": int(pred.size),
        }
    )


def multi_label_report(pred, ref, label_names: Sequence[str]) -> dict:
    """Multi-label scores from multi-hot (N, C) predictions and references: subset accuracy (every
    label of an example right), micro / macro / weighted / samples F1, Hamming loss, and
    per-label precision / recall / F1 / support (scikit-learn)."""
    from sklearn import metrics as skm

    pred = np.asarray(pred).astype(np.int64)
    ref = np.asarray(ref).astype(np.int64)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(f"predictions {pred.shape} and references {ref.shape} must both be (N, num_labels)")
    if pred.shape[1] != len(label_names):
        raise ValueError(f"{pred.shape[1]} label columns but {len(label_names)} label names")
    ids = list(range(len(label_names)))
    report = skm.classification_report(
        ref, pred, labels=ids, target_names=list(label_names), output_dict=True, zero_division=0
    )
    f1 = {avg: skm.f1_score(ref, pred, labels=ids, average=avg, zero_division=0)
          for avg in ("micro", "macro", "weighted", "samples")}
    return _plain(
        {
            "subset_accuracy": skm.accuracy_score(ref, pred),
            "micro_f1": f1["micro"],
            "macro_f1": f1["macro"],
            "weighted_f1": f1["weighted"],
            "samples_f1": f1["samples"],
            "hamming_loss": skm.hamming_loss(ref, pred),
            "per_label": {name: _rename_f1(report[name]) for name in label_names},
            "labels": list(label_names),
            "num_examples": len(ref),
        }
    )
