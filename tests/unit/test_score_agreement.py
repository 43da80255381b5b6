"""The vectorized per-query statistics of scripts/compare.py against scipy, query by query."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from producer.score_agreement import QueryGroups, distribution, per_query


def _groups(sizes: list[int]) -> QueryGroups:
    flags = np.zeros(sum(sizes), dtype=bool)
    flags[np.cumsum([0, *sizes[:-1]])] = True
    return QueryGroups.from_boundaries(flags)


def _random_scores(sizes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_pairs = sum(sizes)
    a = rng.normal(size=n_pairs)
    b = a + rng.normal(scale=0.5, size=n_pairs)
    # bf16-like ties: a third of the pairs get coarse scores on one side or both.
    coarse = rng.random(n_pairs) < 0.3
    a[coarse] = np.round(a[coarse], 1)
    b[coarse] = np.round(b[coarse], 1)
    return a, b


# One pair, two pairs, all tied on one side, many small queries, and a query above the matrix path.
SIZES = [1, 2, 5, 7, 7, 7, 20, 20, 33, 300, 3, 10]


def test_spearman_and_kendall_equal_scipy_per_query() -> None:
    a, b = _random_scores(SIZES, seed=4)
    start = sum(SIZES[:2])
    a[start : start + 5] = 0.25  # the third query: every score of A tied
    result = per_query(_groups(SIZES), a, b, top_ks=(1, 5))
    offset = 0
    for query, size in enumerate(SIZES):
        window = slice(offset, offset + size)
        offset += size
        if size < 2 or query == 2:
            assert np.isnan(result.spearman[query]) and np.isnan(result.kendall[query])
            continue
        assert result.spearman[query] == pytest.approx(
            stats.spearmanr(a[window], b[window]).statistic, abs=1e-12
        )
        assert result.kendall[query] == pytest.approx(
            stats.kendalltau(a[window], b[window]).statistic, abs=1e-12
        )


def test_top_k_overlap_counts_shared_documents_of_each_query() -> None:
    sizes = [4, 3, 1]
    a = np.array([4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 9.0])
    b = np.array([1.0, 3.0, 2.0, 4.0, 3.0, 2.0, 1.0, 9.0])
    result = per_query(_groups(sizes), a, b, top_ks=(1, 2, 5))
    # Query 0: A's best two are positions 0, 1; B's are 3, 1. Query 1 reversed. Query 2: one pair.
    np.testing.assert_allclose(result.top_k_overlap[1], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(result.top_k_overlap[2], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(result.top_k_overlap[5], [1.0, 1.0, 1.0])  # k past the query: all of it


def test_distribution_shift_is_scipys_two_sample_test() -> None:
    a, b = _random_scores([50, 50], seed=5)
    shift = distribution(a, b + 0.3)
    assert shift.ks_statistic == pytest.approx(stats.ks_2samp(a, b + 0.3).statistic)
    assert shift.quantiles_a[3] == pytest.approx(np.median(a))
    assert shift.max_abs_diff == pytest.approx(np.abs(b + 0.3 - a).max())
