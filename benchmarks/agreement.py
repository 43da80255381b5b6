"""How closely a contender's scores follow the float32 reference, query by query, measured with the
statistics of scripts/compare.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from producer.score_agreement import QueryGroups, spearman_per_query, top_k_overlap

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
    order = np.concatenate([np.arange(len(reference))[query] for query in queries])
    sizes = np.array([len(range(len(reference))[query]) for query in queries])
    flags = np.zeros(len(order), dtype=bool)
    flags[np.cumsum(sizes) - sizes] = True
    groups = QueryGroups.from_boundaries(flags)
    reference, scores = reference[order], scores[order]
    correlations = spearman_per_query(groups, reference, scores)
    # A query with every score equal on both sides agrees fully; tied on one side only, not at all.
    flat_reference = _flat(reference, groups) & _flat(scores, groups)
    correlations = np.where(np.isnan(correlations), np.where(flat_reference, 1.0, 0.0), correlations)
    return Agreement(
        spearman_mean=float(correlations.mean()),
        spearman_min=float(correlations.min()),
        top_k_same=float(np.mean(top_k_overlap(groups, reference, scores, top_k) == 1.0)),
        max_abs_diff=float(np.abs(scores - reference).max()),
    )


def _flat(values: np.ndarray, groups: QueryGroups) -> np.ndarray:
    return np.maximum.reduceat(values, groups.starts) == np.minimum.reduceat(values, groups.starts)
