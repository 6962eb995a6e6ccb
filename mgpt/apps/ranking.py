"""Recommendation ranking's pure core: candidates grouped by user, ranked by score, and ranking metrics.

A row is one (user, candidate item) pair with a score (the model's click probability, or a baseline's) and,
when known, its relevance (1 = clicked). Candidates are ranked by score, highest first; ties keep the input
order, and every metric is computed on that one ranking: NDCG@k with scikit-learn's ``ndcg_score``, recall@k
and MRR (reciprocal rank of the first relevant candidate) with ``ir-measures`` (pytrec_eval). Users without a
relevant candidate have no defined recall or reciprocal rank and are left out of every mean (and counted).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rank_by_user(users: Sequence[str], scores: Sequence[float]) -> dict[str, list[int]]:
    """Row indices of each user's candidates, best score first (stable: ties keep the input order).

    Users come in the order they first appear.
    """
    if len(users) != len(scores):
        raise ValueError(f"{len(users)} users but {len(scores)} scores")
    rows: dict[str, list[int]] = {}
    for row, user in enumerate(users):
        rows.setdefault(user, []).append(row)
    scores = np.asarray(scores, dtype=np.float64)
    return {user: [idx[j] for j in np.argsort(-scores[idx], kind="stable")] for user, idx in rows.items()}


def ranking_metrics(users: Sequence[str], scores: Sequence[float], relevance: Sequence[int],
                    ks: Sequence[int] = (5, 10)) -> dict:
    """Mean NDCG@k and recall@k for each k, and MRR, over the users with at least one relevant candidate.

    Returns ``{"ndcg@k": ..., "recall@k": ..., "mrr": ..., "users": evaluated users,
    "users_without_relevant": left out, "candidates": rows}``.
    """
    import ir_measures
    from sklearn.metrics import ndcg_score

    relevance = np.asarray(relevance, dtype=np.int64)
    if len(relevance) != len(users):
        raise ValueError(f"{len(users)} users but {len(relevance)} relevance values")
    ranked = {user: rows for user, rows in rank_by_user(users, scores).items() if relevance[rows].sum() > 0}
    result = {"users": len(ranked), "users_without_relevant": len(set(users)) - len(ranked), "candidates": len(users)}
    if not ranked:
        return result
    for k in ks:
        # sklearn sees the ranking as scores n, n-1, ...: no ties, so it ranks exactly as we do
        result[f"ndcg@{k}"] = float(np.mean([
            ndcg_score([relevance[rows]], [np.arange(len(rows), 0, -1)], k=k) for rows in ranked.values()]))
    qrels, run = [], []
    for user, rows in ranked.items():
        for position, row in enumerate(rows):
            doc = str(row)  # the row, not the item id: a user may be offered the same item twice
            qrels.append(ir_measures.Qrel(user, doc, int(relevance[row])))
            run.append(ir_measures.ScoredDoc(user, doc, float(len(rows) - position)))
    measures = [ir_measures.R @ k for k in ks] + [ir_measures.RR]
    per_user = {measure: [] for measure in measures}
    for metric in ir_measures.iter_calc(measures, qrels, run):
        per_user[metric.measure].append(metric.value)
    for k in ks:
        result[f"recall@{k}"] = float(np.mean(per_user[ir_measures.R @ k]))
    result["mrr"] = float(np.mean(per_user[ir_measures.RR]))
    return result


def random_scores(count: int, seed: int) -> np.ndarray:
    """A seeded random ranking: uniform scores, one per row."""
    return np.random.default_rng(seed).random(count)


def popularity_scores(train_items: Sequence[str], train_clicks: Sequence[int], items: Sequence[str]) -> np.ndarray:
    """Each item's click rate among the training impressions, add-one smoothed ((clicks + 1) / (shown + 2)), so an
    item never shown in training scores 0.5 and one shown once is not ranked on a single click."""
    shown: dict[str, int] = {}
    clicked: dict[str, int] = {}
    for item, click in zip(train_items, train_clicks):
        shown[item] = shown.get(item, 0) + 1
        clicked[item] = clicked.get(item, 0) + int(click)
    return np.asarray([(clicked.get(item, 0) + 1) / (shown.get(item, 0) + 2) for item in items])


def rankings(users: Sequence[str], items: Sequence[str], scores: Sequence[float],
             relevance: Sequence[int] | None = None) -> list[dict]:
    """One record per user: ``{"user", "ranking": [{"item", "score", "relevance"?}, ...]}``, best first."""
    out = []
    for user, rows in rank_by_user(users, scores).items():
        ranking = [{"item": items[row], "score": float(scores[row])} for row in rows]
        if relevance is not None:
            for entry, row in zip(ranking, rows):
                entry["relevance"] = int(relevance[row])
        out.append({"user": user, "ranking": ranking})
    return out
