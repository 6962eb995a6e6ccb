"""``mgpt monitor``: read a stream, predict sentiments (and missing topics) with trained runs, write the report.

Outputs in the output directory: ``monitor.json`` (:func:`mgpt.apps.monitor.analyse`'s report),
``monitor_items.jsonl`` (each item with its period, topic, where the topic came from, and predicted sentiment)
and ``monitor_timeline.png`` (:func:`mgpt.apps.monitor_plot.timeline_figure`).
"""

from __future__ import annotations

import json
import os

from mgpt.apps import monitor, monitor_plot
from mgpt.data.errors import DataError
from mgpt.train import evaluation, scoring, setup

REPORT_FILE = "monitor.json"
ITEMS_FILE = "monitor_items.jsonl"


def run_monitor(config, checkpoint: str, stream_path: str, output_dir: str, settings: monitor.MonitorSettings,
                topic_model: tuple | None = None) -> dict:
    """Monitor ``stream_path`` with the sentiment run ``(config, checkpoint)``; ``topic_model`` is an optional
    ``(config, checkpoint)`` whose predicted label is the topic of lines without one. Returns the report."""
    items = monitor.read_stream(stream_path)  # every line checked before a model loads
    untopical = [i for i, item in enumerate(items) if item.topic is None]
    if untopical and topic_model is None:
        raise DataError(f"{items[untopical[0]].where}: the line has no 'topic' and no topic classifier was given: "
                        "add a topic to every line, or pass --topic-experiment and --topic-checkpoint")
    run, params, _ = setup.load_for_inference(config, checkpoint)
    if settings.negative_label not in run.data.label_names:
        raise DataError(f"{config.name}: the sentiment model's labels {list(run.data.label_names)} have no "
                        f"{settings.negative_label!r}; pass --negative-label with the label that means negative")
    sentiments = _predict(run, params, [item.text for item in items], stream_path)
    topics = [item.topic for item in items]
    if untopical:
        topic_run, topic_params, _ = setup.load_for_inference(*topic_model)
        predicted = _predict(topic_run, topic_params, [items[i].text for i in untopical], stream_path)
        for i, topic in zip(untopical, predicted):
            topics[i] = topic
    report = monitor.analyse([item.time for item in items], topics, sentiments, run.data.label_names, settings)
    os.makedirs(output_dir, exist_ok=True)
    evaluation.write_json(os.path.join(output_dir, REPORT_FILE), report)
    _write_items(os.path.join(output_dir, ITEMS_FILE), items, topics, sentiments, settings.period)
    fig = monitor_plot.timeline_figure(report)
    fig.savefig(os.path.join(output_dir, monitor_plot.TIMELINE_FILE), dpi=100)
    return report


def _predict(run, params, texts: list[str], source: str) -> list[str]:
    scoring.add_texts(run, "monitor", texts, source)
    return scoring.predicted_labels(run, params, "monitor")


def _write_items(path: str, items, topics, sentiments, period: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for item, topic, sentiment in zip(items, topics, sentiments):
            row = {"where": item.where, "time": item.time.isoformat(),
                   "period": monitor.period_label(monitor.period_start(item.time, period), period),
                   "topic": topic, "topic_from": "stream" if item.topic is not None else "model",
                   "text": item.text, "sentiment": sentiment}
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
