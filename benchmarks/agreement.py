"""How closely a contender's scores follow the float32 reference, query by query."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_K = 10


@dataclass(frozen=True)
class Agreement:
    spearman_mean: float  # mean over queries of the Spearman correlation with the reference
    spearman_min: float
    top_k_same: float  # share of queries whose top-k set of documents is unchanged
    max_abs_diff: float  # largest |score - reference| over all pairs


def agreement(
    reference: np.ndarray, scores: np.ndarray, queries: list[slice], top_k: int = TOP_K
) -> Agreement:
    """Compare ``scores`` with ``reference`` within each query's slice of pairs."""
    reference = np.asarray(reference, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if reference.shape != scores.shape:
        raise ValueError(f"{scores.shape[0]} scores for {reference.shape[0]} reference scores")
    correlations = np.array([spearman(reference[query], scores[query]) for query in queries])
    same_top = [top_set(reference[query], top_k) == top_set(scores[query], top_k) for query in queries]
    return Agreement(
        spearman_mean=float(correlations.mean()),
        spearman_min=float(correlations.min()),
        top_k_same=float(np.mean(same_top)),
        max_abs_diff=float(np.abs(scores - reference).max()),
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties; 1.0 when both are constant."""
    rank_a, rank_b = average_ranks(a), average_ranks(b)
    spread_a, spread_b = rank_a.std(), rank_b.std()
    if spread_a == 0 or spread_b == 0:
        return 1.0 if spread_a == spread_b else 0.0
    return float(np.mean((rank_a - rank_a.mean()) * (rank_b - rank_b.mean())) / (spread_a * spread_b))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    mean_rank = (starts[:-1] + starts[1:] + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, np.diff(starts))
    return ranks


def top_set(values: np.ndarray, k: int) -> frozenset[int]:
    """Positions of the ``k`` highest values."""
    return frozenset(np.argsort(-values, kind="stable")[:k].tolist())
