"""The sentiment monitor: pure core on generated streams with a known surge, and `mgpt monitor` end to end."""

import csv
import datetime as dt
import json
import os
import random

import pytest

from mgpt import cli
from mgpt.apps import monitor
from mgpt.apps.monitor_plot import timeline_figure
from mgpt.config import ConfigError
from mgpt.data.errors import DataError

from fixtures_tiny import FILLER, NEGATIVE, POSITIVE, tiny_bert

UTC = dt.timezone.utc
LABELS = ("negative", "neutral", "positive")
START = dt.datetime(2024, 3, 1, tzinfo=UTC)


def _items(per_day: dict, days: int = 10):
    """``(times, topics, sentiments)``: for day d and topic t, ``per_day[t](d)`` = (negative, neutral, positive)
    counts, spread over the day."""
    times, topics, sentiments = [], [], []
    for day in range(days):
        for topic, counts in per_day.items():
            labels = [label for label, n in zip(LABELS, counts(day)) for _ in range(n)]
            for i, label in enumerate(labels):
                times.append(START + dt.timedelta(days=day, minutes=37 * i))
                topics.append(topic)
                sentiments.append(label)
    return times, topics, sentiments


SURGE_DAY = 7  # 2024-03-08
STREAM = {"banks": lambda d: (12, 5, 3) if d == SURGE_DAY else (2, 10, 8),
          "energy": lambda d: (3, 9, 8)}


def _analyse(items, **settings):
    return monitor.analyse(*items, LABELS, monitor.MonitorSettings(**settings))


def test_alert_fires_at_the_surge_and_nowhere_else():
    report = _analyse(_items(STREAM), baseline_periods=3, min_items=10, margin=0.15)
    assert [p["period"] for p in report["periods"]] == [f"2024-03-{d:02d}" for d in range(1, 11)]
    assert report["alerts"] == [{"period": "2024-03-08", "topic": "banks", "share": 0.6,
                                 "baseline": pytest.approx(0.1), "count": 20}]
    surge = report["periods"][SURGE_DAY]["topics"]
    assert surge["banks"]["alert"] and not surge["energy"]["alert"]


def test_shares_and_baselines_against_hand_counts():
    report = _analyse(_items(STREAM), baseline_periods=3, min_items=10)
    first, surge, after = (report["periods"][i]["topics"] for i in (0, SURGE_DAY, SURGE_DAY + 1))
    assert first["banks"]["counts"] == {"negative": 2, "neutral": 10, "positive": 8}
    assert first["banks"]["shares"] == {"negative": 0.1, "neutral": 0.5, "positive": 0.4}
    assert first["energy"]["negative_share"] == 0.15
    assert first["banks"]["baseline"] is None  # no earlier period: nothing to compare with
    assert surge["banks"]["shares"] == {"negative": 0.6, "neutral": 0.25, "positive": 0.15}
    assert after["banks"]["baseline"] == pytest.approx((0.1 + 0.1 + 0.6) / 3)
    assert after["energy"]["baseline"] == pytest.approx(0.15)
    assert report["num_items"] == 400 and report["topics"] == ["banks", "energy"]


def test_margin_is_strict_and_a_fixed_baseline_replaces_the_rolling_one():
    items = _items({"banks": lambda d: (5, 10, 5) if d == 2 else (2, 10, 8)}, days=3)  # 0.25 against 0.1
    assert _analyse(items, margin=0.15, min_items=10)["alerts"] == []  # exceeds by 0.15 exactly: no alert
    assert [a["period"] for a in _analyse(items, margin=0.14, min_items=10)["alerts"]] == ["2024-03-03"]
    fixed = _analyse(items, margin=0.05, min_items=10, fixed_baseline=0.0)  # day 1 alerts too: no history needed
    assert [(a["period"], a["baseline"]) for a in fixed["alerts"]] == [("2024-03-01", 0.0), ("2024-03-02", 0.0),
                                                                        ("2024-03-03", 0.0)]


def test_min_items_is_respected_for_alerts_and_baselines():
    # The surge period has 8 items (< 10): no alert however high its share.
    small = _items({"banks": lambda d: (6, 1, 1) if d == 3 else (2, 10, 8)}, days=4)
    assert _analyse(small, min_items=10)["alerts"] == []
    assert [a["period"] for a in _analyse(small, min_items=8)["alerts"]] == ["2024-03-04"]
    # A small period with a high share does not enter the baseline: day 3's baseline is day 1's 0.1 alone.
    noisy = _items({"banks": lambda d: {1: (4, 0, 0), 2: (8, 6, 6)}.get(d, (2, 10, 8))}, days=3)
    report = _analyse(noisy, min_items=10, baseline_periods=2)
    assert report["periods"][2]["topics"]["banks"]["baseline"] == pytest.approx(0.1)
    assert [a["period"] for a in report["alerts"]] == ["2024-03-03"]


def test_rolling_baseline_uses_only_the_last_n_periods():
    items = _items({"banks": lambda d: (8, 6, 6) if d == 0 else (2, 10, 8)}, days=4)
    report = _analyse(items, min_items=10, baseline_periods=2)
    assert [p["topics"]["banks"]["baseline"] for p in report["periods"]] == [None, 0.4, pytest.approx(0.25), 0.1]
    warm = _analyse(items, min_items=10, baseline_periods=2, min_baseline_periods=2)  # no baseline from one period
    assert [p["topics"]["banks"]["baseline"] for p in warm["periods"]] == [None, None, pytest.approx(0.25), 0.1]


@pytest.mark.parametrize("period, moments, labels", [
    ("day", ["2024-03-03T23:59:59Z", "2024-03-04T00:00:00Z", "2024-03-04T01:30:00+02:00"],
     ["2024-03-03", "2024-03-04", "2024-03-03"]),
    ("hour", ["2024-03-04T09:59:59.999Z", "2024-03-04T10:00:00", "2024-03-04T12:10:00+01:00"],
     ["2024-03-04T09Z", "2024-03-04T10Z", "2024-03-04T11Z"]),
    ("week", ["2024-03-10T23:59:59Z", "2024-03-11T00:00:00Z", "2024-12-29T12:00:00Z", "2024-12-30T00:00:00Z"],
     ["2024-W10", "2024-W11", "2024-W52", "2025-W01"]),
])
def test_period_bucketing_at_boundaries(period, moments, labels):
    starts = [monitor.period_start(monitor.parse_time(m, "x"), period) for m in moments]
    assert [monitor.period_label(s, period) for s in starts] == labels
    assert all(s.tzinfo == UTC for s in starts)


def test_timeline_keeps_empty_periods():
    times = [START, START + dt.timedelta(days=3, hours=5)]
    report = monitor.analyse(times, ["a", "a"], ["negative", "neutral"], LABELS,
                             monitor.MonitorSettings(min_items=1))
    assert [(p["period"], sorted(p["topics"])) for p in report["periods"]] == [
        ("2024-03-01", ["a"]), ("2024-03-02", []), ("2024-03-03", []), ("2024-03-04", ["a"])]


def test_settings_and_labels_are_checked():
    with pytest.raises(ConfigError, match="period 'month'"):
        monitor.MonitorSettings(period="month")
    with pytest.raises(ConfigError, match="min baseline periods"):
        monitor.MonitorSettings(baseline_periods=3, min_baseline_periods=4)
    with pytest.raises(ConfigError, match="margin"):
        monitor.MonitorSettings(margin=-0.1)
    with pytest.raises(ConfigError, match="have no 'negative'"):
        monitor.analyse([START], ["a"], ["pos"], ("neg", "pos"), monitor.MonitorSettings())


def test_timeline_figure_has_a_line_per_topic_and_the_alert_marked():
    report = _analyse(_items(STREAM), baseline_periods=3, min_items=10)
    axis = timeline_figure(report).axes[0]
    assert [line.get_label() for line in axis.lines] == ["banks", "energy"]
    assert list(axis.lines[0].get_ydata())[SURGE_DAY] == 0.6
    (alerts,) = axis.collections
    assert alerts.get_offsets().tolist()[0][1] == 0.6


def _write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("line, expected", [
    ('{"time": "2024-03-01T10:00:00Z", "text": "x"', "expected one JSON object per line"),
    ('{"text": "x", "topic": "banks"}', "missing key 'time'"),
    ('{"time": "yesterday", "text": "x"}', "'time' 'yesterday' is not a time"),
    ('{"time": "2024-03-01", "text": ""}', "'text' must be a non-empty string"),
    ('{"time": "2024-03-01", "text": "x", "topic": 3}', "'topic' must be a non-empty string"),
])
def test_a_bad_stream_line_fails_naming_file_and_line(tmp_path, line, expected):
    good = '{"time": "2024-03-01T09:00:00Z", "text": "fine", "topic": "banks"}'
    path = _write_lines(tmp_path / "stream.jsonl", [good, "", line])
    with pytest.raises(DataError) as info:
        monitor.read_stream(path)
    assert str(info.value).startswith(f"{path}:3: ") and expected in str(info.value)


def test_read_stream_reads_times_topics_and_places(tmp_path):
    path = _write_lines(tmp_path / "s.jsonl", ['{"time": "2024-03-01T09:00:00+01:00", "text": "a", "topic": "t"}',
                                               '{"time": "2024-03-02", "text": "b"}'])
    items = monitor.read_stream(path)
    assert [(i.time, i.text, i.topic, i.where) for i in items] == [
        (dt.datetime(2024, 3, 1, 8, tzinfo=UTC), "a", "t", f"{path}:1"),
        (dt.datetime(2024, 3, 2, tzinfo=UTC), "b", None, f"{path}:2")]


# End to end: a tiny 3-class sentiment model trained here, then `mgpt monitor` over a stream with a surge.

def _sentence(rng, label):
    words = rng.sample(FILLER, 3)
    if label != "neutral":
        words.append(rng.choice(NEGATIVE if label == "negative" else POSITIVE))
    rng.shuffle(words)
    return " ".join(words)


def _sentiment_csv(path, count, seed):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for i in range(count):
            label = LABELS[i % 3]
            writer.writerow([_sentence(rng, label), label])
    return str(path)


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("monitor")
    model_dir = tiny_bert(directory / "bert")
    files = {split: _sentiment_csv(directory / f"{split}.csv", n, seed)
             for split, n, seed in (("train", 120, 0), ("validation", 30, 1))}
    experiment = directory / "tiny_sentiment.py"
    experiment.write_text(f'''"""Tiny 3-class sentiment.

    mgpt train tiny_sentiment.py
"""
from mgpt.config import *


def get_config():
    return ExperimentConfig(
        name="tiny_sentiment",
        model=ModelConfig(name_or_path={model_dir!r}, dropout=0.0),
        data=DataConfig(format="csv", train_file={files["train"]!r}, validation_file={files["validation"]!r},
                        text_column="review", label_column="sentiment", labels=("negative", "neutral", "positive"),
                        max_length=10),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-2, schedule="constant"),
        train=TrainConfig(batch_size=8, eval_batch_size=16, num_epochs=6, log_every=10, progress_bar=False),
        checkpoint=CheckpointConfig(max_to_keep=1),
    )
''')
    workdir = str(directory / "run")
    assert cli.main(["train", str(experiment), "--workdir", workdir]) == 0
    with open(os.path.join(workdir, "eval_validation.json")) as f:
        assert json.load(f)["accuracy"] == 1.0  # separable data: the monitor below sees the true labels
    return str(experiment), workdir


def _stream(path, rng, surge_day=4, days=6, per_day=10, drop_topic=()):
    """Two topics, ``per_day`` items each a day; banks' negative share jumps from 0.1 to 0.8 on ``surge_day``."""
    lines, truth = [], []
    for day in range(days):
        for topic in ("banks", "energy"):
            negatives = 8 if (topic == "banks" and day == surge_day) else 1
            for i in range(per_day):
                label = "negative" if i < negatives else ("neutral", "positive")[i % 2]
                record = {"time": f"2024-03-{day + 1:02d}T{8 + i:02d}:15:00Z", "text": _sentence(rng, label)}
                if (day, topic) not in drop_topic:
                    record["topic"] = topic
                lines.append(json.dumps(record))
                truth.append(label)
    return _write_lines(path, lines), truth


def _predict(experiment, workdir, texts, tmp_path):
    source = tmp_path / "texts.csv"
    with open(source, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review"])
        writer.writerows([t] for t in texts)
    output = tmp_path / "predicted.jsonl"
    assert cli.main(["predict", experiment, "--checkpoint", workdir, "--input", str(source),
                     "--output", str(output)]) == 0
    with open(output) as f:
        return [json.loads(line)["prediction"] for line in f]


def _read_items(output):
    with open(os.path.join(output, "monitor_items.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_monitor_command_alerts_at_the_surge(sentiment_run, tmp_path, capsys):
    experiment, workdir = sentiment_run
    stream, truth = _stream(tmp_path / "stream.jsonl", random.Random(5))
    output = str(tmp_path / "out")
    assert cli.main(["monitor", experiment, "--checkpoint", workdir, "--input", stream, "--output", output,
                     "--baseline-periods", "3", "--min-items", "5"]) == 0
    with open(os.path.join(output, "monitor.json")) as f:
        report = json.load(f)
    items = _read_items(output)
    predicted = _predict(experiment, workdir, [item["text"] for item in items], tmp_path)
    assert [item["sentiment"] for item in items] == predicted
    # The tiny model is good, not perfect (its few errors move with the XLA version), so the shares are
    # counted by hand from its own predictions: items are 10 a day per topic, banks first.
    assert sum(p == t for p, t in zip(predicted, truth)) >= 0.9 * len(truth)  # chance is a third
    banks = [predicted[day * 20:day * 20 + 10].count("negative") / 10 for day in range(6)]
    assert [(a["period"], a["topic"]) for a in report["alerts"]] == [("2024-03-05", "banks")]
    assert report["alerts"][0]["share"] == pytest.approx(banks[4]) and banks[4] >= 0.7
    assert report["alerts"][0]["baseline"] == pytest.approx(sum(banks[1:4]) / 3)
    assert os.path.getsize(os.path.join(output, "monitor_timeline.png")) > 0
    assert f"alert: 2024-03-05 banks: negative share {banks[4]:.2f}" in capsys.readouterr().out


def test_lines_without_topic_get_the_topic_models_label(sentiment_run, tmp_path, capsys):
    experiment, workdir = sentiment_run
    stream, truth = _stream(tmp_path / "stream.jsonl", random.Random(6), days=2, drop_topic={(1, "energy")})
    output = str(tmp_path / "out")
    args = ["monitor", experiment, "--checkpoint", workdir, "--input", stream, "--output", output, "--min-items", "5"]
    assert cli.main(args) == 2
    assert f"{stream}:31: the line has no 'topic'" in capsys.readouterr().err
    # The sentiment model doubles as the "topic" model: its label is the topic of the ten lines without one.
    assert cli.main(args + ["--topic-experiment", experiment, "--topic-checkpoint", workdir]) == 0
    items = _read_items(output)
    assert [(i["topic"], i["topic_from"]) for i in items[30:]] == [(label, "model") for label in truth[30:]]
    assert {i["topic_from"] for i in items[:30]} == {"stream"}


def test_malformed_stream_line_exits_2_naming_file_and_line(sentiment_run, tmp_path, capsys):
    experiment, workdir = sentiment_run
    stream = _write_lines(tmp_path / "stream.jsonl", ['{"time": "2024-03-01T09:00:00Z", "text": "x", "topic": "a"}',
                                                      '{"time": "2024-03-01T10:00:00Z", "text": "y", "topic": "a"}',
                                                      '{"time": "2024-13-01T10:00:00Z", "text": "z"}'])
    assert cli.main(["monitor", experiment, "--checkpoint", workdir, "--input", stream,
                     "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mgpt: monitor: {stream}:3: 'time' '2024-13-01T10:00:00Z' is not a time")
    assert not os.path.exists(tmp_path / "out")
