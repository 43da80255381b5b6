"""A recipe applied to scored pairs of whole queries: the raw ``score`` and ``rank`` stay, and the
columns the recipe asks for are added (``normalized_score``, ``source_<name>``, ``final_score``,
``final_rank``), each described in the file's metadata (``columns``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from core.kinds import ScoreScale
from core.score_transforms import Grouping, Normalizer
from producer.fusion import (
    FusedInput,
    final_scores,
    ranks_in_groups,
    reciprocal_ranks,
    similarity,
    weighted_mean,
)
from producer.ranking_recipe import RankingRecipe, Source


class Ranker:
    """Adds a recipe's columns to tables of whole queries. A run-wide normalization is ``fit`` with every
    raw score of the run first."""

    def __init__(self, recipe: RankingRecipe, scale: ScoreScale, model: str) -> None:
        self.recipe = recipe
        self.scale = scale
        self.model = model
        self.normalizer = (
            Normalizer(recipe.normalize, recipe.normalize_over, scale) if recipe.normalize else None
        )

    @property
    def needs_fit(self) -> bool:
        return self.normalizer is not None and self.normalizer.needs_fit

    def fit(self, run_scores: np.ndarray) -> None:
        if self.normalizer is not None:
            self.normalizer.fit(run_scores)

    def columns(self) -> dict[str, str]:
        """What each column of the output holds, for the file's metadata."""
        recipe = self.recipe
        meanings = {
            "score": f"raw score of {self.model} ({self.scale})",
            "rank": "rank of score within the query, 1 the best",
        }
        if self.normalizer is not None:
            meanings["normalized_score"] = self.normalizer.describe()
        for source in recipe.sources:
            meanings[source.output_column] = (
                f"first-stage {source.metric} from corpus column {source.column!r}"
            )
        if recipe.fuse == "rrf":
            meanings["final_score"] = (
                f"{recipe.rerank_weight:g} / ({recipe.rrf_k:g} + rank) + {1 - recipe.rerank_weight:g} * "
                f"weighted mean of 1 / ({recipe.rrf_k:g} + source rank) over "
                + ", ".join(f"{s.name} (weight {recipe.weight_of(s.name):g})" for s in recipe.sources)
            )
        elif recipe.fuse == "weighted":
            rerank_term = "normalized_score" if self.normalizer is not None else "per-query minmax of score"
            meanings["final_score"] = (
                f"{recipe.rerank_weight:g} * {rerank_term} + {1 - recipe.rerank_weight:g} * weighted mean of "
                f"the sources' per-query {recipe.source_normalize} similarities: "
                + ", ".join(f"{s.name} (weight {recipe.weight_of(s.name):g})" for s in recipe.sources)
            )
        if recipe.fuse is not None:
            meanings["final_rank"] = "rank of final_score within the query, 1 the best"
        return meanings

    def rank(self, table: pa.Table, carried: Mapping[str, np.ndarray]) -> pa.Table:
        """``table`` (whole queries: ``query_id``, ``score``, ...) with the recipe's columns appended;
        ``carried`` holds each source column's values, NaN where the corpus has none."""
        recipe = self.recipe
        query_ids = table.column("query_id")
        raw = table.column("score").to_numpy().astype(np.float64)
        grouping = Grouping.of_queries(query_ids)
        normalized = self.normalizer.apply(raw, query_ids) if self.normalizer is not None else None
        if normalized is not None:
            table = table.append_column("normalized_score", _floats(normalized))
        for source in recipe.sources:
            table = table.append_column(source.output_column, _floats(carried[source.column]))
        if recipe.fuse is None:
            return table
        if recipe.fuse == "rrf":
            rerank_term = reciprocal_ranks(ranks_in_groups(raw, grouping), recipe.rrf_k)
            first_stage = weighted_mean(
                [
                    FusedInput(
                        reciprocal_ranks(self._source_ranks(source, carried, grouping), recipe.rrf_k),
                        recipe.weight_of(source.name),
                    )
                    for source in recipe.sources
                ]
            )
        else:
            rerank_term = (
                normalized
                if normalized is not None
                else Normalizer("minmax", "query", self.scale).apply(raw, query_ids)
            )
            source_normalizer = Normalizer(recipe.source_normalize, "query", "score")
            first_stage = weighted_mean(
                [
                    FusedInput(
                        source_normalizer.apply(similarity(carried[source.column], source.metric), query_ids),
                        recipe.weight_of(source.name),
                    )
                    for source in recipe.sources
                ]
            )
        final = final_scores(rerank_term, first_stage, recipe.rerank_weight)
        table = table.append_column("final_score", _floats(final))
        return table.append_column(
            "final_rank", pa.array(ranks_in_groups(final, grouping).astype(np.int32), type=pa.int32())
        )

    @staticmethod
    def _source_ranks(source: Source, carried: Mapping[str, np.ndarray], grouping: Grouping) -> np.ndarray:
        values = carried[source.column]
        if source.metric == "rank":
            return values
        return ranks_in_groups(similarity(values, source.metric), grouping)


def _floats(values: np.ndarray) -> pa.Array:
    """float64, null where NaN."""
    return pa.array(values, type=pa.float64(), from_pandas=True)
