"""Score normalizations, per query or over a whole run, computed for all queries at once with numpy.

Values are float64, NaN where a pair has none (a first-stage source that did not retrieve it); every
statistic skips NaN and every transform keeps it. What each normalization gives (best = highest):

- ``sigmoid``: 1 / (1 + e^-s); a score that already is a probability is kept as it is, never squashed
  a second time;
- ``bayes``: sigmoid((s - median) / std) of the group: a logistic calibration centred on the group's
  median with its spread as the scale (on probabilities, of their logits);
- ``minmax``: (s - min) / (max - min), 1 where every score of the group is the same;
- ``percentile``: (average rank from the bottom - 1) / (n - 1), ties sharing their average; 1 for a
  group of one;
- ``atan``: 1/2 + atan(s) / pi, into (0, 1), no statistics;
- ``zscore``: (s - mean) / std (population std), 0 where std is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.kinds import ScoreScale
from core.model_spec import ModelSpec

Normalization = Literal["sigmoid", "bayes", "minmax", "percentile", "atan", "zscore"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
Scope = Literal["query", "run"]
SCOPES: tuple[str, ...] = get_args(Scope)
# Probabilities this close to 0 or 1 are clipped before their logit is taken.
_PROBABILITY_EPSILON = 1e-7
_NEEDS_STATISTICS = {"bayes", "minmax", "percentile", "zscore"}


@dataclass(frozen=True)
class Grouping:
    """Which group each pair is in (``codes``, 0 .. count - 1): its query, or one group for a run."""

    codes: np.ndarray
    count: int

    @classmethod
    def of_queries(cls, query_ids: pa.Array | pa.ChunkedArray) -> Grouping:
        if isinstance(query_ids, pa.ChunkedArray):
            query_ids = query_ids.combine_chunks()
        encoded = pc.dictionary_encode(query_ids)
        return cls(encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary))

    @classmethod
    def single(cls, n_pairs: int) -> Grouping:
        return cls(np.zeros(n_pairs, dtype=np.int64), 1)


@dataclass(frozen=True)
class GroupStatistics:
    """Per group, over its non-NaN values: count, min, max, mean, population std and median."""

    count: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    median: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, grouping: Grouping) -> GroupStatistics:
        valid = ~np.isnan(values)
        codes, kept = grouping.codes[valid], values[valid]
        count = np.bincount(codes, minlength=grouping.count)
        mean = np.bincount(codes, weights=kept, minlength=grouping.count) / np.maximum(count, 1)
        deviations = (kept - mean[codes]) ** 2
        std = np.sqrt(np.bincount(codes, weights=deviations, minlength=grouping.count) / np.maximum(count, 1))
        ordered = kept[np.lexsort((kept, codes))]
        starts = np.cumsum(count) - count
        last = starts + np.maximum(count, 1) - 1
        present = count > 0
        minimum, maximum, median = (np.full(grouping.count, np.nan) for _ in range(3))
        minimum[present] = ordered[starts[present]]
        maximum[present] = ordered[last[present]]
        lower = starts + (np.maximum(count, 1) - 1) // 2
        upper = starts + np.maximum(count, 1) // 2
        median[present] = (ordered[lower[present]] + ordered[upper[present]]) / 2
        return cls(count, minimum, maximum, mean, std, median)


def as_probability_logits(values: np.ndarray) -> np.ndarray:
    clipped = np.clip(values, _PROBABILITY_EPSILON, 1 - _PROBABILITY_EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(values / 2.0))  # no overflow for large |values|


def group_percentiles(values: np.ndarray, grouping: Grouping) -> np.ndarray:
    """(Average rank from the bottom - 1) / (group size - 1) within each group, ties sharing their average
    rank; 1 in a group of one; NaN stays NaN."""
    result = np.full(len(values), np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    if valid.size == 0:
        return result
    codes, kept = grouping.codes[valid], values[valid]
    order = np.lexsort((kept, codes))
    sorted_codes, sorted_values = codes[order], kept[order]
    new_run = np.r_[True, (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_values[1:] != sorted_values[:-1])]
    run_starts = np.flatnonzero(new_run)
    run_ends = np.r_[run_starts[1:], len(order)] - 1
    run_of = np.cumsum(new_run) - 1
    count = np.bincount(codes, minlength=grouping.count)
    group_start = (np.cumsum(count) - count)[sorted_codes]
    position = (run_starts[run_of] + run_ends[run_of]) / 2 - group_start
    size = count[sorted_codes]
    percentile = np.where(size > 1, position / np.maximum(size - 1, 1), 1.0)
    result[valid[order]] = percentile
    return result


def score_scale(model: str, metadata: Mapping[str, object]) -> ScoreScale:
    """What ``model``'s raw scores are: its kind's declaration, or where the model's activation decides,
    the activation its scores file records."""
    declared = ModelSpec.parse(model).declared_scale
    if declared != "activation":
        return declared
    return "probability" if str(metadata.get("activation", "")).endswith("Sigmoid") else "logit"


class Normalizer:
    """One normalization of one kind of score, per query or over a run.

    Over a run, ``fit`` is given every score of the run first (its statistics are the run's); per query
    each ``apply`` computes the statistics of the queries it is given, which must be whole."""

    def __init__(self, method: Normalization, scope: Scope, scale: ScoreScale) -> None:
        self.method = method
        self.scope = scope
        self.scale = scale
        self._run: GroupStatistics | None = None
        self._run_sorted: np.ndarray | None = None

    @property
    def needs_fit(self) -> bool:
        return self.scope == "run" and self.method in _NEEDS_STATISTICS

    @property
    def keeps_probabilities(self) -> bool:
        """A sigmoid of scores that already are probabilities is the scores themselves."""
        return self.method == "sigmoid" and self.scale == "probability"

    def describe(self) -> str:
        if self.keeps_probabilities:
            return "score as it is: the model's scores already are probabilities, so no sigmoid is applied"
        where = "each query's" if self.scope == "query" else "the whole run's"
        return {
            "sigmoid": "sigmoid of score",
            "atan": "1/2 + atan(score)/pi",
            "bayes": f"sigmoid((score - median) / std) with {where} median and std",
            "minmax": f"(score - min) / (max - min) over {where} scores",
            "percentile": f"percentile of score among {where} scores (0 lowest, 1 highest)",
            "zscore": f"(score - mean) / std over {where} scores",
        }[self.method]

    def fit(self, run_scores: np.ndarray) -> None:
        values = self._working_values(np.asarray(run_scores, dtype=np.float64))
        values = values[~np.isnan(values)]
        self._run = GroupStatistics.of(values, Grouping.single(len(values)))
        if self.method == "percentile":
            self._run_sorted = np.sort(values)

    def apply(self, scores: np.ndarray, query_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        values = self._working_values(np.asarray(scores, dtype=np.float64))
        if self.method == "sigmoid":
            return values if self.keeps_probabilities else sigmoid(values)
        if self.method == "atan":
            return 0.5 + np.arctan(values) / np.pi
        if self.scope == "run":
            if self._run is None:
                raise RuntimeError("a run-wide normalization needs fit() with the run's scores first")
            grouping, statistics = Grouping.single(len(values)), self._run
            if self.method == "percentile":
                return self._run_percentiles(values)
        else:
            grouping = Grouping.of_queries(query_ids)
            if self.method == "percentile":
                return group_percentiles(values, grouping)
            statistics = GroupStatistics.of(values, grouping)
        return _standardized(self.method, values, grouping.codes, statistics)

    def _working_values(self, scores: np.ndarray) -> np.ndarray:
        # Bayes calibrates on the logit scale, where a probability's spread means something.
        if self.method == "bayes" and self.scale == "probability":
            return as_probability_logits(scores)
        return scores

    def _run_percentiles(self, values: np.ndarray) -> np.ndarray:
        assert self._run_sorted is not None
        ordered = self._run_sorted
        below = np.searchsorted(ordered, values, side="left")
        through = np.searchsorted(ordered, values, side="right")
        if len(ordered) < 2:
            return np.where(np.isnan(values), np.nan, 1.0)
        return np.where(np.isnan(values), np.nan, (below + through - 1) / 2 / (len(ordered) - 1))


def _standardized(
    method: Normalization, values: np.ndarray, codes: np.ndarray, statistics: GroupStatistics
) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "minmax":
            low, span = statistics.minimum[codes], (statistics.maximum - statistics.minimum)[codes]
            return np.where(span > 0, (values - low) / span, np.where(np.isnan(values), np.nan, 1.0))
        std = statistics.std[codes]
        if method == "zscore":
            centred = values - statistics.mean[codes]
            return np.where(std > 0, centred / std, np.where(np.isnan(values), np.nan, 0.0))
        centred = values - statistics.median[codes]  # bayes
        return np.where(std > 0, sigmoid(centred / std), np.where(np.isnan(values), np.nan, 0.5))
