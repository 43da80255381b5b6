"""How two sets of scores for the same pairs agree, query by query: Spearman's rho and Kendall's tau-b
(both with ties handled as scipy does), the overlap of each query's top k, and how far the score
distribution moved. Computed over all queries at once with numpy, so a night's millions of pairs
compare in seconds rather than in one scipy call per query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Above this many pairs a query's Kendall tau is left to scipy's O(n log n) algorithm; below it the
# n x n sign matrices of many queries are compared in one numpy expression.
_KENDALL_MATRIX_MAX = 256
_KENDALL_BLOCK_ELEMENTS = 1 << 22
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class QueryGroups:
    """Pairs sorted so that each query's pairs are contiguous: ``codes`` numbers the query of each pair
    0, 1, 2, ... in order; ``starts`` and ``sizes`` say where each query's pairs are."""

    codes: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_boundaries(cls, new_query: np.ndarray) -> QueryGroups:
        """Groups from a per-pair flag that is True where a query's pairs begin (the first pair's too)."""
        starts = np.flatnonzero(new_query)
        return cls(np.cumsum(new_query) - 1, starts, np.diff(np.r_[starts, len(new_query)]))

    @property
    def count(self) -> int:
        return len(self.sizes)


@dataclass(frozen=True)
class PerQuery:
    """One value per query for each statistic; NaN where it is undefined (fewer than two pairs, or every
    score of the query tied on one side)."""

    spearman: np.ndarray
    kendall: np.ndarray
    top_k_overlap: dict[int, np.ndarray]  # k -> share of the k best pairs of A that are among B's k best


@dataclass(frozen=True)
class Distribution:
    quantiles_a: tuple[float, ...]
    quantiles_b: tuple[float, ...]
    ks_statistic: float  # two-sample Kolmogorov-Smirnov: largest gap between the two CDFs
    ks_pvalue: float
    mean_abs_diff: float  # over pairs: |score_b - score_a|
    max_abs_diff: float


def per_query(groups: QueryGroups, a: np.ndarray, b: np.ndarray, top_ks: Sequence[int]) -> PerQuery:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ranks_a, ranks_b = _descending_ranks(groups, a), _descending_ranks(groups, b)
    return PerQuery(
        spearman=spearman_per_query(groups, a, b),
        kendall=kendall_per_query(groups, a, b),
        top_k_overlap={k: _overlap(groups, ranks_a, ranks_b, k) for k in set(top_ks)},
    )


def average_ranks(groups: QueryGroups, values: np.ndarray) -> np.ndarray:
    """1-based ranks within each query, ascending; tied values share the mean of the ranks they span."""
    n_pairs = len(values)
    order = np.lexsort((values, groups.codes))
    ordered = values[order]
    ordered_codes = groups.codes[order]
    new_tie = np.r_[True, (ordered_codes[1:] != ordered_codes[:-1]) | (ordered[1:] != ordered[:-1])]
    tie_starts = np.flatnonzero(new_tie)
    tie_ends = np.r_[tie_starts[1:], n_pairs]
    query_start = groups.starts[ordered_codes[tie_starts]]
    mean_rank = (tie_starts + 1 + tie_ends) / 2.0 - query_start
    ranks = np.empty(n_pairs, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, tie_ends - tie_starts)
    return ranks


def spearman_per_query(groups: QueryGroups, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's correlation of the average ranks, per query (scipy's ``spearmanr``)."""
    if groups.count == 0:
        return np.empty(0)
    mean_rank = (groups.sizes + 1) / 2.0  # average ranks always sum to n(n+1)/2
    centred_a = average_ranks(groups, a) - mean_rank[groups.codes]
    centred_b = average_ranks(groups, b) - mean_rank[groups.codes]
    covariance = _per_query_sum(groups, centred_a * centred_b)
    spread = np.sqrt(_per_query_sum(groups, centred_a**2) * _per_query_sum(groups, centred_b**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(spread > 0, covariance / spread, np.nan)
    return np.clip(rho, -1.0, 1.0)


def kendall_per_query(groups: QueryGroups, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b per query (scipy's ``kendalltau`` default): concordant minus discordant pairs
    over the square root of the pairs untied in A times the pairs untied in B."""
    tau = np.full(groups.count, np.nan)
    for size in np.unique(groups.sizes):
        if size < 2:
            continue
        queries = np.flatnonzero(groups.sizes == size)
        if size > _KENDALL_MATRIX_MAX:
            stats = _scipy_stats()
            for query in queries:
                window = slice(groups.starts[query], groups.starts[query] + size)
                tau[query] = stats.kendalltau(a[window], b[window]).statistic
            continue
        positions = groups.starts[queries][:, None] + np.arange(size)
        block = max(1, _KENDALL_BLOCK_ELEMENTS // (size * size))
        for first in range(0, len(queries), block):
            rows = positions[first : first + block]
            signs_a = _pairwise_signs(a[rows])
            signs_b = _pairwise_signs(b[rows])
            concordance = (signs_a * signs_b).sum(axis=(1, 2), dtype=np.int64)
            untied = np.abs(signs_a).sum(axis=(1, 2), dtype=np.int64) * np.abs(signs_b).sum(
                axis=(1, 2), dtype=np.int64
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                tau[queries[first : first + block]] = np.where(
                    untied > 0, concordance / np.sqrt(untied.astype(np.float64)), np.nan
                )
    return np.clip(tau, -1.0, 1.0)


def top_k_overlap(groups: QueryGroups, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per query, the share of A's ``k`` best pairs that are also among B's ``k`` best (of
    ``min(k, pairs)``). Equal scores are ordered by position, the same way on both sides."""
    return _overlap(groups, _descending_ranks(groups, a), _descending_ranks(groups, b), k)


def _overlap(groups: QueryGroups, ranks_a: np.ndarray, ranks_b: np.ndarray, k: int) -> np.ndarray:
    if groups.count == 0:
        return np.empty(0)
    in_both = (ranks_a <= k) & (ranks_b <= k)
    return _per_query_sum(groups, in_both.astype(np.float64)) / np.minimum(k, groups.sizes)


def distribution(a: np.ndarray, b: np.ndarray) -> Distribution:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) == 0:
        nothing = tuple(float("nan") for _ in QUANTILES)
        return Distribution(nothing, nothing, float("nan"), float("nan"), float("nan"), float("nan"))
    ks = _scipy_stats().ks_2samp(a, b)
    difference = np.abs(b - a)
    return Distribution(
        quantiles_a=tuple(float(q) for q in np.quantile(a, QUANTILES)),
        quantiles_b=tuple(float(q) for q in np.quantile(b, QUANTILES)),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        mean_abs_diff=float(difference.mean()),
        max_abs_diff=float(difference.max()),
    )


def _per_query_sum(groups: QueryGroups, values: np.ndarray) -> np.ndarray:
    return np.bincount(groups.codes, weights=values, minlength=groups.count)


def _descending_ranks(groups: QueryGroups, values: np.ndarray) -> np.ndarray:
    """1-based ordinal ranks within each query, highest value first, ties in position order."""
    positions = np.arange(len(values))
    order = np.lexsort((positions, -values, groups.codes))
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = positions - groups.starts[groups.codes[order]] + 1
    return ranks


def _pairwise_signs(rows: np.ndarray) -> np.ndarray:
    """sign(x_i - x_j) for every i, j of each row, as int8."""
    left = rows[:, :, None]
    right = rows[:, None, :]
    return (left > right).astype(np.int8) - (left < right).astype(np.int8)


def _scipy_stats() -> Any:
    # Imported when first needed: scipy.stats takes most of a second to import, and submit.py, which
    # loads this module for its canary check, should start fast.
    from scipy import stats

    return stats
