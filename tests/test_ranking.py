"""Recommendation ranking: the pure metrics against hand-computed values, and `mgpt rank` on a tiny model."""

import csv
import json
import math
import os
import random

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from mgpt import cli
from mgpt.apps import ranking

from fixtures_tiny import FILLER, NEGATIVE, POSITIVE, tiny_gpt2, write_classification_experiment

D2, D3, D4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)  # DCG discounts of ranks 2, 3, 4

# User a ranks its rows 0, 1, 3, 2 (relevance 0 1 0 1); b ranks 1, 0, 2 (0 1 0); c has no click; d's two scores
# tie, so they keep the input order (1 0).
USERS = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "d", "d"]
SCORES = [0.9, 0.8, 0.3, 0.5, 0.2, 0.7, 0.1, 0.6, 0.4, 0.5, 0.5]
RELEVANCE = [0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0]


def test_rank_by_user_sorts_by_score_and_keeps_ties_in_input_order():
    assert ranking.rank_by_user(USERS, SCORES) == {"a": [0, 1, 3, 2], "b": [5, 4, 6], "c": [7, 8], "d": [9, 10]}


def test_ranking_metrics_against_hand_computed_values():
    metrics = ranking.ranking_metrics(USERS, SCORES, RELEVANCE, ks=(2, 4))
    ndcg2 = [D2 / (1 + D2), D2 / 1, 1.0]
    ndcg4 = [(D2 + D4) / (1 + D2), D2 / 1, 1.0]
    assert metrics["users"] == 3 and metrics["users_without_relevant"] == 1 and metrics["candidates"] == 11
    assert metrics["ndcg@2"] == pytest.approx(np.mean(ndcg2))
    assert metrics["ndcg@4"] == pytest.approx(np.mean(ndcg4))
    assert metrics["recall@2"] == pytest.approx(np.mean([1 / 2, 1, 1]))
    assert metrics["recall@4"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx(np.mean([1 / 2, 1 / 2, 1]))


def test_graded_relevance_goes_into_ndcg():
    metrics = ranking.ranking_metrics(["u"] * 3, [0.9, 0.5, 0.1], [1, 2, 0], ks=(3,))
    assert metrics["ndcg@3"] == pytest.approx((1 + 2 * D2) / (2 + 1 * D2))
    assert metrics["mrr"] == 1.0


def test_popularity_and_random_baselines():
    scores = ranking.popularity_scores(["x", "x", "y", "z"], [1, 0, 1, 1], ["x", "y", "w"])
    np.testing.assert_allclose(scores, [2 / 4, 2 / 3, 1 / 2])
    np.testing.assert_array_equal(ranking.random_scores(5, seed=3), ranking.random_scores(5, seed=3))
    assert len(set(ranking.random_scores(5, seed=3))) == 5


def test_rankings_records():
    records = ranking.rankings(["u", "u", "v"], ["i1", "i2", "i3"], [0.2, 0.8, 0.5], [0, 1, 1])
    assert records == [{"user": "u", "ranking": [{"item": "i2", "score": 0.8, "relevance": 1},
                                                 {"item": "i1", "score": 0.2, "relevance": 0}]},
                       {"user": "v", "ranking": [{"item": "i3", "score": 0.5, "relevance": 1}]}]


@pytest.fixture(scope="module")
def click_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rank")
    experiment = write_classification_experiment(str(directory), tiny_gpt2(directory / "model"), name="tiny_rank")
    workdir = str(directory / "run")
    assert cli.main(["train", experiment, "--workdir", workdir]) == 0
    return experiment, workdir


def _candidates(path, users=4, per_user=5, seed=0):
    """(user, item, review, sentiment) rows: "pos" reviews stand for clicks."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "review", "sentiment"])
        for u in range(users):
            for i in range(per_user):
                label = "pos" if (u + i) % 3 == 0 else "neg"
                words = rng.sample(FILLER, 2) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
                writer.writerow([f"user{u}", f"item{i}", " ".join(words), label])
    return str(path)


def test_rank_command_metrics_equal_sklearn_and_hand_values(click_run, tmp_path):
    experiment, workdir = click_run
    source = _candidates(tmp_path / "candidates.csv")
    output = str(tmp_path / "out")
    assert cli.main(["rank", experiment, "--checkpoint", workdir, "--input", source, "--output", output,
                     "--positive-label", "pos", "--k", "2", "4"]) == 0
    with open(os.path.join(output, "rankings.jsonl")) as f:
        rankings = [json.loads(line) for line in f]
    with open(os.path.join(output, "rank_metrics.json")) as f:
        metrics = json.load(f)
    assert [r["user"] for r in rankings] == [f"user{u}" for u in range(4)]
    with open(source) as f:
        rows = list(csv.DictReader(f))
    score = {(r["user"], e["item"]): e["score"] for r in rankings for e in r["ranking"]}
    for r in rankings:
        assert [e["score"] for e in r["ranking"]] == sorted((e["score"] for e in r["ranking"]), reverse=True)
        assert [e["relevance"] for e in r["ranking"]] == [
            int(next(row["sentiment"] for row in rows if (row["user"], row["item"]) == (r["user"], e["item"])) == "pos")
            for e in r["ranking"]]
    # The scores are the model's P(pos): above one half exactly where `mgpt predict` says "pos".
    predicted = tmp_path / "predicted.jsonl"
    assert cli.main(["predict", experiment, "--checkpoint", workdir, "--input", source, "--output", str(predicted)]) == 0
    with open(predicted) as f:
        labels = [json.loads(line)["prediction"] for line in f]
    assert [score[row["user"], row["item"]] > 0.5 for row in rows] == [label == "pos" for label in labels]
    # The metrics, recomputed here from the written rankings: sklearn's NDCG, recall and MRR by hand.
    judged = [[e["relevance"] for e in r["ranking"]] for r in rankings]
    judged = [rel for rel in judged if sum(rel) > 0]
    for k in (2, 4):
        ndcg = [ndcg_score([rel], [list(range(len(rel), 0, -1))], k=k) for rel in judged]
        assert metrics[f"ndcg@{k}"] == pytest.approx(np.mean(ndcg))
        assert metrics[f"recall@{k}"] == pytest.approx(np.mean([sum(rel[:k]) / sum(rel) for rel in judged]))
    assert metrics["mrr"] == pytest.approx(np.mean([1 / (rel.index(1) + 1) for rel in judged]))
    assert metrics["users"] == len(judged) == 4


def test_rank_command_names_a_missing_user_column(click_run, tmp_path, capsys):
    experiment, workdir = click_run
    source = tmp_path / "candidates.csv"
    source.write_text("item,review\nitem0,the movie was good\n")
    assert cli.main(["rank", experiment, "--checkpoint", workdir, "--input", str(source),
                     "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mgpt: rank: {source}:1: missing column 'user' (for ranking)")  # the header's line
