"""Random and popularity rankings of the recommendation test split, measured as `mgpt rank` measures a model.

    python experiments/benchmarks/recommendation_baselines.py --train data/recommendation/items_train.csv \
        --test data/recommendation/items_test.csv --output runs/recommendation/baselines.json

Random: seeded uniform scores. Popularity: each item's add-one-smoothed click rate among the training users'
impressions (mgpt.apps.ranking.popularity_scores). Same users, candidates, cut-offs and metric code as the
model's ranking (mgpt.apps.ranking.ranking_metrics).
"""

from __future__ import annotations

import argparse
import csv
import json

from mgpt.apps import ranking


def read_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--output", help="JSON file for both results")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = read_rows(args.train), read_rows(args.test)
    users = [row["user"] for row in test]
    relevance = [int(row["label"]) for row in test]
    scores = {
        "random": ranking.random_scores(len(test), args.seed),
        "popularity": ranking.popularity_scores([r["item"] for r in train], [int(r["label"]) for r in train],
                                                [r["item"] for r in test]),
    }
    results = {name: ranking.ranking_metrics(users, s, relevance, tuple(args.k)) for name, s in scores.items()}
    for name, metrics in results.items():
        print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
