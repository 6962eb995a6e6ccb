"""A timestamped JSONL stream for `mgpt monitor`, with a known surge of negative texts, from any labelled CSV.

    python experiments/benchmarks/make_monitor_stream.py --texts labelled.csv --output stream.jsonl \
        --topics banks energy retail --surge-topic banks --surge-day 14

Each day and topic gets ``--per-day`` texts drawn from the CSV (``--text-column``, ``--label-column``), of which a
Binomial(per_day, ``--base-negative``) number are negative ones (``--negative`` label) and the rest the other
labels; on ``--surge-day`` the surge topic's negative share is ``--surge-negative`` instead. Times are uniform
within the day (UTC). The true labels go into ``label`` (the monitor ignores it), so what the model predicted
can be compared with what was planted. Seeded.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", required=True, help="CSV with a text and a sentiment label column")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--negative", default="negative", help="the label of negative texts")
    parser.add_argument("--output", required=True)
    parser.add_argument("--start", default="2024-03-01", help="first day (UTC)")
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--per-day", type=int, default=30, help="texts per topic and day")
    parser.add_argument("--topics", nargs="+", default=["banks", "energy", "retail"])
    parser.add_argument("--surge-topic", default="banks")
    parser.add_argument("--surge-day", type=int, default=14, help="0-based day of the surge")
    parser.add_argument("--base-negative", type=float, default=0.15)
    parser.add_argument("--surge-negative", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.texts, newline="") as f:
        rows = list(csv.DictReader(f))
    negative = [r for r in rows if r[args.label_column] == args.negative]
    other = [r for r in rows if r[args.label_column] != args.negative]
    if not negative or not other:
        raise SystemExit(f"{args.texts}: need both {args.negative!r} texts and others in {args.label_column!r}")
    rng = random.Random(args.seed)
    start = dt.datetime.fromisoformat(args.start).replace(tzinfo=dt.timezone.utc)
    lines = []
    for day in range(args.days):
        for topic in args.topics:
            share = args.surge_negative if (topic == args.surge_topic and day == args.surge_day) else args.base_negative
            negatives = sum(rng.random() < share for _ in range(args.per_day))
            for row in rng.sample(negative, negatives) + rng.sample(other, args.per_day - negatives):
                moment = start + dt.timedelta(days=day, seconds=rng.randrange(86400))
                lines.append((moment, {"time": moment.isoformat().replace("+00:00", "Z"), "topic": topic,
                                       "text": row[args.text_column], "label": row[args.label_column]}))
    lines.sort(key=lambda pair: pair[0])
    with open(args.output, "w") as f:
        f.write("".join(json.dumps(record) + "\n" for _, record in lines))
    print(f"{args.output}: {len(lines)} lines, {args.days} days, topics {', '.join(args.topics)}; "
          f"surge: {args.surge_topic} on day {args.surge_day}")


if __name__ == "__main__":
    main()
