"""``mgpt rank``: score every (user, candidate) row of a file with a trained click classifier, rank per user,
and measure the rankings where the file has labels.

The file is read as ``mgpt predict`` reads its input (the experiment's data format and columns); two more
columns name the user and the item. Outputs: ``rankings.jsonl`` (one line per user, candidates best first)
and ``rank_metrics.json`` (:func:`mgpt.apps.ranking.ranking_metrics`, when every row is labelled).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

from mgpt.apps import ranking
from mgpt.config import ConfigError
from mgpt.data import reading
from mgpt.data.errors import DataError
from mgpt.train import evaluation, scoring, setup

RANKINGS_FILE = "rankings.jsonl"
METRICS_FILE = "rank_metrics.json"


def run_ranking(config, checkpoint: str, input_path: str, output_dir: str, *, user_column: str = "user",
                item_column: str = "item", positive_label: str = "1", ks: tuple[int, ...] = (5, 10)) -> dict | None:
    """Rank the candidates of ``input_path`` by the run's probability of ``positive_label``; returns the metrics
    (None when some row has no label)."""
    if not ks or min(ks) < 1:
        raise DataError(f"ranking cut-offs must be positive integers, got {list(ks)}")
    if importlib.util.find_spec("ir_measures") is None:  # said now, not after the model has loaded
        raise ConfigError("mgpt rank measures recall@k and MRR with ir-measures: pip install 'mgpt[apps]'")
    data_cfg = dataclasses.replace(config.data, predict_file=input_path)
    users, items = _ids(input_path, data_cfg, user_column, item_column)  # checked before the model loads
    run, params, _ = setup.load_for_inference(dataclasses.replace(config, data=data_cfg), checkpoint)
    labels = list(run.data.label_names)
    if positive_label not in labels:
        raise DataError(f"{config.name}: the model's labels {labels} have no {positive_label!r}; pass "
                        "--positive-label with the label that means a click")
    examples = run.data.examples["predict"]
    if len(examples) != len(users):
        raise DataError(f"{input_path}: {len(users)} rows but {len(examples)} examples after reading; "
                        "rows must not be dropped (check data.drop_empty and the cleaning options)")
    scores = scoring.class_probabilities(run, params, "predict")[:, labels.index(positive_label)]
    relevance = None
    if all("label" in example for example in examples):
        relevance = [int(example["label"] == positive_label) for example in examples]
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, RANKINGS_FILE), "w") as f:
        for record in ranking.rankings(users, items, scores, relevance):
            f.write(json.dumps(record) + "\n")
    if relevance is None:
        return None
    metrics = dict(ranking.ranking_metrics(users, scores, relevance, ks), positive_label=positive_label,
                   input=input_path)
    evaluation.write_json(os.path.join(output_dir, METRICS_FILE), metrics)
    return metrics


def _ids(path: str, data_cfg, user_column: str, item_column: str) -> tuple[list[str], list[str]]:
    """The user and item of every row of ``path`` (as strings), in file order."""
    records = reading.read_file(path, data_cfg, labels_optional=True)
    users, items = [], []
    for where, record in records.rows:
        for column in (user_column, item_column):
            if column not in record:
                raise DataError(records.missing(where, column, "ranking", record))
        users.append(str(record[user_column]))
        items.append(str(record[item_column]))
    return users, items
