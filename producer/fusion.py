"""Fusing the reranker's score with first-stage scores, per query, as search systems rank.

A first-stage source is a per-pair column of one of these kinds (``Metric``):

- ``score``: higher is better, used as it is;
- ``ip``: an inner product, used as it is;
- ``cosine``: a cosine distance d, as the similarity (2 - d) / 2;
- ``l2``: a Euclidean distance d, as the similarity -d;
- ``rank``: the source's own rank of the pair in its query, 1 the best.

Two fusions, both ending in ``final = w * R + (1 - w) * F`` with ``w`` the reranker's weight:

- ``rrf``: reciprocal rank fusion. R = 1 / (k + the reranker's rank of the pair), F = sum of
  weight_i / (k + rank_i) over the sources divided by the sum of their weights (k = 60 by default); a pair
  a source did not rank adds nothing from it.
- ``weighted``: R is the reranker's normalized score, F the weighted mean of the sources' similarities
  each normalized per query (minmax by default); a pair a source has no value for adds 0 from it. Ranks
  are no scores: a ``rank`` source cannot be fused this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from core.score_transforms import Grouping

Metric = Literal["score", "ip", "cosine", "l2", "rank"]
METRICS: tuple[str, ...] = get_args(Metric)
Fusion = Literal["rrf", "weighted"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
DEFAULT_RRF_K = 60


def similarity(values: np.ndarray, metric: Metric) -> np.ndarray:
    """A source's values as a similarity, higher better."""
    if metric == "cosine":
        return (2.0 - values) / 2.0
    if metric == "l2":
        return -values
    if metric == "rank":
        raise ValueError("a rank is not a similarity; fuse rank sources with rrf")
    return values


def ranks_in_groups(values: np.ndarray, grouping: Grouping) -> np.ndarray:
    """Rank 1 = highest value within each group, ties in input order; NaN for a NaN value (unranked)."""
    ranks = np.full(len(values), np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    if valid.size:
        ranks[valid] = ranks_by(Grouping(grouping.codes[valid], grouping.count), values[valid])
    return ranks


def ranks_by(grouping: Grouping, *keys: np.ndarray) -> np.ndarray:
    """Rank 1 = best within each group by ``keys`` (higher better; the first key decides, the next breaks
    its ties, ...), remaining ties in input order."""
    codes = grouping.codes
    order = np.lexsort((np.arange(len(codes)), *(-key for key in reversed(keys)), codes))
    sorted_codes = codes[order]
    new_group = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    first_of = np.flatnonzero(new_group)[np.cumsum(new_group) - 1]
    ranks = np.empty(len(codes), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - first_of + 1
    return ranks


@dataclass(frozen=True)
class FusedInput:
    """One side of a fusion: its values per pair (ranks for rrf, normalized similarities for weighted)
    and its weight."""

    values: np.ndarray
    weight: float


def reciprocal_ranks(ranks: np.ndarray, k: float) -> np.ndarray:
    """1 / (k + rank), 0 where there is no rank."""
    return np.where(np.isnan(ranks), 0.0, 1.0 / (k + np.nan_to_num(ranks, nan=0.0)))


def weighted_mean(inputs: Sequence[FusedInput]) -> np.ndarray:
    """Sum of weight * value over the inputs, a missing value counting 0, divided by the sum of weights."""
    total_weight = sum(item.weight for item in inputs)
    if total_weight <= 0:
        raise ValueError("the fused sources' weights add up to 0")
    fused = np.zeros(len(inputs[0].values))
    for item in inputs:
        fused += item.weight * np.nan_to_num(item.values, nan=0.0)
    return fused / total_weight


def final_scores(rerank: np.ndarray, first_stage: np.ndarray, rerank_weight: float) -> np.ndarray:
    """zvec's fusion_score_weight: w * the reranker's term + (1 - w) * the fused first-stage term."""
    return rerank_weight * np.nan_to_num(rerank, nan=0.0) + (1.0 - rerank_weight) * first_stage
