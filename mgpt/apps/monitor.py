"""The sentiment monitor's pure core: a timestamped stream -> per-period sentiment shares per topic, baselines, alerts.

No model here: each item arrives with its sentiment label (``mgpt.apps.monitor_run`` predicts them). A period is
an hour, a day or an ISO week (Monday to Sunday), in UTC. A topic's baseline in a period is the mean negative
share over the previous ``baseline_periods`` periods of the timeline in which that topic had at least
``min_items`` items, once there are ``min_baseline_periods`` of them (or one fixed share); an alert is a period whose negative share exceeds the baseline by more
than ``margin``, with at least ``min_items`` items.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from typing import Sequence

from mgpt.config import ConfigError
from mgpt.data.errors import DataError
from mgpt.data.formats import read_jsonl

PERIODS = ("hour", "day", "week")
_STEP = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1), "week": dt.timedelta(days=7)}
# Shares are ratios of small counts: a share equal to baseline + margin must not alert through rounding.
_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class StreamItem:
    """One line of the stream: its time (UTC), text, topic (None when the line has none) and ``file:line``."""

    time: dt.datetime
    text: str
    topic: str | None
    where: str


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    """How items are bucketed and when a period alerts (see the module docstring)."""

    period: str = "day"
    baseline_periods: int = 7
    min_baseline_periods: int = 1  # a rolling baseline needs this many earlier periods with enough items
    fixed_baseline: float | None = None  # a fixed negative share instead of the rolling mean
    margin: float = 0.15
    min_items: int = 10
    negative_label: str = "negative"

    def __post_init__(self):
        if self.period not in PERIODS:
            raise ConfigError(f"monitor period {self.period!r}: expected one of {', '.join(PERIODS)}")
        if self.baseline_periods < 1:
            raise ConfigError(f"monitor baseline periods must be >= 1, got {self.baseline_periods}")
        if not 1 <= self.min_baseline_periods <= self.baseline_periods:
            raise ConfigError(f"monitor min baseline periods must be in [1, baseline periods = {self.baseline_periods}], "
                              f"got {self.min_baseline_periods}")
        if self.fixed_baseline is not None and not 0.0 <= self.fixed_baseline <= 1.0:
            raise ConfigError(f"monitor fixed baseline is a share in [0, 1], got {self.fixed_baseline}")
        if not 0.0 <= self.margin <= 1.0:
            raise ConfigError(f"monitor margin is a share in [0, 1], got {self.margin}")
        if self.min_items < 1:
            raise ConfigError(f"monitor min items must be >= 1, got {self.min_items}")


def parse_time(value, where: str) -> dt.datetime:
    """An ISO-8601 time as an aware UTC datetime; a time without an offset is taken as UTC."""
    example = "expected an ISO-8601 time such as 2024-03-04T09:30:00Z"
    if not isinstance(value, str):
        raise DataError(f"{where}: 'time' must be a string; {example}, got {value!r:.60}")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise DataError(f"{where}: 'time' {value!r:.60} is not a time; {example}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def read_stream(path: str) -> list[StreamItem]:
    """Every line of a JSONL stream ``{"time", "text", "topic"?}``, checked; a bad line fails naming ``file:line``."""
    records = read_jsonl(path)
    items = []
    for where, record in records.rows:
        for key in ("time", "text"):
            if key not in record:
                raise DataError(records.missing(where, key, "the monitor stream", record))
        text, topic = record["text"], record.get("topic")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: 'text' must be a non-empty string, got {text!r:.60}")
        if topic is not None and (not isinstance(topic, str) or not topic.strip()):
            raise DataError(f"{where}: 'topic' must be a non-empty string when given, got {topic!r:.60}")
        items.append(StreamItem(parse_time(record["time"], where), text, topic, where))
    return items


def period_start(moment: dt.datetime, period: str) -> dt.datetime:
    """The start (UTC) of the hour, day or ISO week (from Monday 00:00) that holds ``moment``."""
    moment = moment.astimezone(dt.timezone.utc)
    if period == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day - dt.timedelta(days=day.weekday())


def period_label(start: dt.datetime, period: str) -> str:
    """``2024-03-04T09Z`` (hour), ``2024-03-04`` (day) or ``2024-W10`` (ISO week)."""
    if period == "hour":
        return start.strftime("%Y-%m-%dT%HZ")
    if period == "day":
        return start.date().isoformat()
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


def timeline(times: Sequence[dt.datetime], period: str) -> list[dt.datetime]:
    """Every period start from the first item's period to the last one's, empty periods included."""
    first, last = period_start(min(times), period), period_start(max(times), period)
    starts = [first]
    while starts[-1] < last:
        starts.append(starts[-1] + _STEP[period])
    return starts


def analyse(times: Sequence[dt.datetime], topics: Sequence[str], sentiments: Sequence[str],
            labels: Sequence[str], settings: MonitorSettings) -> dict:
    """The monitor's report for items given as parallel sequences (time, topic, predicted sentiment label).

    Returns ``{"settings", "labels", "topics", "periods": [{"period", "start", "topics": {topic: {"count",
    "counts", "shares", "negative_share", "baseline", "alert"}}}], "alerts": [{"period", "topic", "share",
    "baseline", "count"}]}``; a topic appears in a period only when it has items there.
    """
    if not len(times) == len(topics) == len(sentiments):
        raise ValueError(f"times, topics and sentiments differ in length: {len(times)}, {len(topics)}, "
                         f"{len(sentiments)}")
    if not times:
        raise DataError("the stream has no items")
    if settings.negative_label not in labels:
        raise ConfigError(f"the sentiment model's labels {list(labels)} have no {settings.negative_label!r}: "
                          "pass the label that means negative")
    unknown = sorted(set(sentiments) - set(labels))
    if unknown:
        raise ValueError(f"sentiments {unknown} are not among the labels {list(labels)}")
    starts = timeline(times, settings.period)
    index = {start: i for i, start in enumerate(starts)}
    counts = [dict() for _ in starts]  # per period: topic -> Counter of labels
    for moment, topic, sentiment in zip(times, topics, sentiments):
        counts[index[period_start(moment, settings.period)]].setdefault(topic, Counter())[sentiment] += 1
    topic_names = sorted(set(topics))
    periods, alerts = [], []
    for i, start in enumerate(starts):
        label = period_label(start, settings.period)
        entry = {"period": label, "start": start.isoformat(), "topics": {}}
        for topic in topic_names:
            if topic not in counts[i]:
                continue
            stats = _topic_stats(counts[i][topic], labels, settings)
            stats["baseline"] = _baseline(counts, i, topic, settings)
            stats["alert"] = (stats["count"] >= settings.min_items and stats["baseline"] is not None
                              and stats["negative_share"] - stats["baseline"] > settings.margin + _TOLERANCE)
            if stats["alert"]:
                alerts.append({"period": label, "topic": topic, "share": stats["negative_share"],
                               "baseline": stats["baseline"], "count": stats["count"]})
            entry["topics"][topic] = stats
        periods.append(entry)
    return {"settings": dataclasses.asdict(settings), "labels": list(labels), "topics": topic_names,
            "num_items": len(times), "periods": periods, "alerts": alerts}


def _topic_stats(counter: Counter, labels: Sequence[str], settings: MonitorSettings) -> dict:
    count = sum(counter.values())
    shares = {label: counter[label] / count for label in labels}
    return {"count": count, "counts": {label: counter[label] for label in labels}, "shares": shares,
            "negative_share": shares[settings.negative_label]}


def _baseline(counts: list[dict], i: int, topic: str, settings: MonitorSettings) -> float | None:
    """The fixed baseline, or the mean negative share of ``topic`` over the previous periods with enough items."""
    if settings.fixed_baseline is not None:
        return settings.fixed_baseline
    window = counts[max(0, i - settings.baseline_periods): i]
    shares = [c[topic][settings.negative_label] / sum(c[topic].values()) for c in window
              if topic in c and sum(c[topic].values()) >= settings.min_items]
    return sum(shares) / len(shares) if len(shares) >= settings.min_baseline_periods else None
