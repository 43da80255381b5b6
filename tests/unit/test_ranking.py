"""Normalizations, fusions and the ranker against values worked out by hand on a few small queries."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from core.score_transforms import Grouping, Normalizer, score_scale
from producer.fusion import ranks_in_groups
from producer.ranking import Ranker
from producer.ranking_recipe import RankingRecipe, RecipeError, Source, recipe_from_flags

# Query a: three pairs; b: two tied; c: one.
QUERY_IDS = pa.array(["a", "a", "a", "b", "b", "c"])
SCORES = np.array([1.0, 2.0, 4.0, 0.5, 0.5, 3.0])
ROOT14 = math.sqrt(14)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def normalized(method: str, scope: str = "query", scale: str = "logit", scores: np.ndarray = SCORES) -> list:
    normalizer = Normalizer(method, scope, scale)  # type: ignore[arg-type]
    if normalizer.needs_fit:
        normalizer.fit(scores)
    return normalizer.apply(scores, QUERY_IDS).tolist()


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("minmax", [0, 1 / 3, 1, 1, 1, 1]),
        ("zscore", [-4 / ROOT14, -1 / ROOT14, 5 / ROOT14, 0, 0, 0]),
        ("percentile", [0, 0.5, 1, 0.5, 0.5, 1]),
        ("sigmoid", [sig(x) for x in SCORES]),
        ("atan", [0.5 + math.atan(x) / math.pi for x in SCORES]),
        # a: median 2, std sqrt(14)/3; b and c have no spread.
        ("bayes", [sig(-3 / ROOT14), 0.5, sig(6 / ROOT14), 0.5, 0.5, 0.5]),
    ],
)
def test_each_normalization_per_query(method: str, expected: list[float]) -> None:
    assert normalized(method) == pytest.approx(expected)


def test_normalizations_over_the_whole_run() -> None:
    # The run's scores sorted: 0.5 0.5 1 2 3 4 (mean 11/6).
    assert normalized("minmax", "run") == pytest.approx([(x - 0.5) / 3.5 for x in SCORES])
    assert normalized("percentile", "run") == pytest.approx([0.4, 0.6, 1.0, 0.1, 0.1, 0.8])
    std = math.sqrt(sum((x - 11 / 6) ** 2 for x in SCORES) / 6)
    assert normalized("zscore", "run") == pytest.approx([(x - 11 / 6) / std for x in SCORES])
    assert normalized("bayes", "run") == pytest.approx([sig((x - 1.5) / std) for x in SCORES])


def test_a_probability_is_never_squashed_twice() -> None:
    probabilities = np.array([0.1, 0.7, 0.9, 0.2, 0.6, 0.5])
    assert normalized("sigmoid", scale="probability", scores=probabilities) == probabilities.tolist()
    # Bayes calibrates probabilities on the logit scale: the middle of query a maps to one half.
    calibrated = normalized("bayes", scale="probability", scores=probabilities)
    assert calibrated[1] == pytest.approx(0.5)
    assert calibrated[0] < 0.5 < calibrated[2]
    assert "no sigmoid is applied" in Normalizer("sigmoid", "query", "probability").describe()


def test_missing_values_stay_missing_and_leave_the_statistics_alone() -> None:
    values = np.array([1.0, np.nan, 4.0, 0.5, np.nan, 3.0])
    result = Normalizer("minmax", "query", "score").apply(values, QUERY_IDS)
    assert np.isnan(result[[1, 4]]).all()
    assert result[[0, 2, 3, 5]].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_ranks_in_groups_best_first_ties_in_input_order_missing_unranked() -> None:
    grouping = Grouping.of_queries(QUERY_IDS)
    ranks = ranks_in_groups(np.array([2.0, 2.0, 5.0, np.nan, 1.0, 0.0]), grouping)
    assert ranks[[0, 1, 2, 4, 5]].tolist() == [2, 3, 1, 1, 1]
    assert np.isnan(ranks[3])


def three_docs(**carried: list[float]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    table = pa.table(
        {
            "query_id": pa.array([7, 7, 7]),
            "doc_id": pa.array(["d0", "d1", "d2"]),
            "score": pa.array([0.9, 0.2, 0.5], pa.float32()),
            "rank": pa.array([1, 3, 2], pa.int32()),
        }
    )
    return table, {name: np.array(values, dtype=np.float64) for name, values in carried.items()}


def test_rrf_with_k_60_and_weights() -> None:
    table, carried = three_docs(bm25_score=[10, 30, 20], dense_distance=[0.1, 0.5, 0.3])
    recipe = RankingRecipe(
        sources=(Source("bm25", "bm25_score"), Source("dense", "dense_distance", "cosine")),
        fuse="rrf",
        weights=(("dense", 2.0),),
    )
    ranked = Ranker(recipe, "probability", "cohere:rerank-v3.5").rank(table, carried).to_pydict()
    # Reranker ranks 1 3 2; bm25 ranks 3 1 2; dense similarities (2 - d) / 2 = .95 .75 .85: ranks 1 3 2.
    first_stage = [(1 / 63 + 2 / 61) / 3, (1 / 61 + 2 / 63) / 3, (1 / 62 + 2 / 62) / 3]
    expected = [
        0.5 / 61 + 0.5 * first_stage[0],
        0.5 / 63 + 0.5 * first_stage[1],
        0.5 / 62 + 0.5 * first_stage[2],
    ]
    assert ranked["final_score"] == pytest.approx(expected)
    assert ranked["final_rank"] == [1, 3, 2]
    assert ranked["source_bm25"] == [10, 30, 20]
    assert ranked["score"] == pytest.approx([0.9, 0.2, 0.5])  # the raw score stays


def test_rrf_of_a_rank_source_and_a_pair_it_did_not_rank() -> None:
    table, carried = three_docs(dense_rank=[2, 1, math.nan])
    recipe = RankingRecipe(
        sources=(Source("dense", "dense_rank", "rank"),), fuse="rrf", rrf_k=10, rerank_weight=0
    )
    ranked = Ranker(recipe, "probability", "cohere:m").rank(table, carried).to_pydict()
    assert ranked["final_score"] == pytest.approx([1 / 12, 1 / 11, 0.0])
    assert ranked["final_rank"] == [2, 1, 3]
    assert ranked["source_dense"] == [2, 1, None]


def test_weighted_fusion_converts_distances_and_normalizes_per_query() -> None:
    table, carried = three_docs(l2_distance=[1.0, 3.0, 2.0], inner_product=[0.2, 0.8, 0.5])
    recipe = RankingRecipe(
        sources=(Source("l2", "l2_distance", "l2"), Source("ip", "inner_product", "ip")),
        fuse="weighted",
        weights=(("l2", 3.0), ("ip", 1.0)),
        rerank_weight=0.25,
    )
    ranked = Ranker(recipe, "probability", "cohere:m").rank(table, carried).to_pydict()
    # -d minmax: 1 0 .5; ip minmax: 0 1 .5; fused (3 * l2 + ip) / 4; reranker minmax: 1 0 3/7.
    expected = [0.25 * 1 + 0.75 * 0.75, 0.25 * 0 + 0.75 * 0.25, 0.25 * 3 / 7 + 0.75 * 0.5]
    assert ranked["final_score"] == pytest.approx(expected)
    assert ranked["final_rank"] == [1, 3, 2]


def test_cosine_distance_becomes_a_similarity() -> None:
    table, carried = three_docs(distance=[0.0, 2.0, 1.0])
    recipe = RankingRecipe(sources=(Source("d", "distance", "cosine"),), fuse="weighted", rerank_weight=0)
    ranker = Ranker(recipe, "logit", "flag:m")
    recipe_z = RankingRecipe(
        sources=(Source("d", "distance", "cosine"),),
        fuse="weighted",
        rerank_weight=0,
        source_normalize="atan",
    )
    assert ranker.rank(table, carried)["final_score"].to_pylist() == pytest.approx([1.0, 0.0, 0.5])
    # (2 - d) / 2 = 1, 0, .5, then 1/2 + atan(s)/pi.
    atan_scores = Ranker(recipe_z, "logit", "flag:m").rank(table, carried)["final_score"].to_pylist()
    assert atan_scores == pytest.approx([0.5 + math.atan(s) / math.pi for s in (1.0, 0.0, 0.5)])


def test_the_metadata_says_what_each_column_holds() -> None:
    recipe = RankingRecipe(
        normalize="sigmoid", sources=(Source("bm25", "bm25_score"),), fuse="rrf", weights=(("bm25", 2.0),)
    )
    columns = Ranker(recipe, "logit", "flag:m").columns()
    assert columns["score"] == "raw score of flag:m (logit)"
    assert columns["normalized_score"] == "sigmoid of score"
    assert "bm25_score" in columns["source_bm25"]
    assert "60" in columns["final_score"] and "weight 2" in columns["final_score"]
    assert set(columns) == {"score", "rank", "normalized_score", "source_bm25", "final_score", "final_rank"}


def test_score_scale_comes_from_the_kind_or_the_models_activation() -> None:
    assert score_scale("flag:x", {}) == "logit"
    assert score_scale("cohere:rerank-v3.5", {}) == "probability"
    assert (
        score_scale("cross-encoder:m", {"activation": "torch.nn.modules.activation.Sigmoid"}) == "probability"
    )
    assert score_scale("cross-encoder:m", {"activation": "torch.nn.modules.linear.Identity"}) == "logit"


def flags(**changes: object) -> RankingRecipe:
    values: dict[str, object] = {
        "normalize": None,
        "normalize_over": "query",
        "sources": [],
        "fuse": None,
        "rrf_k": 60.0,
        "weights": None,
        "rerank_weight": 0.5,
        "source_normalize": "minmax",
    }
    values.update(changes)
    return recipe_from_flags(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sources": ["bm25"]}, "--source bm25: give NAME=COLUMN"),
        ({"sources": ["bm25=col:manhattan"]}, "'manhattan' is no metric"),
        ({"sources": ["a=x", "a=y"], "fuse": "rrf"}, "--source a is given twice"),
        (
            {"sources": ["a=x"], "fuse": "rrf", "weights": "a=heavy"},
            "the weight 'heavy' of a is not a number",
        ),
        ({"sources": ["a=x"], "fuse": "rrf", "weights": "b=1"}, "no --source is named 'b'"),
        ({"sources": ["a=x"], "fuse": "rrf", "weights": "a=-1"}, "a weight is a number of at least 0"),
        ({"sources": ["a=x:rank"], "fuse": "weighted"}, "--fuse weighted cannot use the rank source a"),
        ({"fuse": "rrf"}, "--fuse rrf needs at least one --source"),
        ({"sources": ["a=x"], "weights": "a=1"}, "--fusion-weights applies to a fusion"),
        (
            {"sources": ["a=x"], "fuse": "rrf", "rerank_weight": 1.5},
            "--rerank-weight 1.5: give a number from 0",
        ),
        ({"sources": ["a=x"], "fuse": "rrf", "rrf_k": 0}, "--rrf-k 0"),
        ({"normalize_over": "run"}, "--normalize-over run needs --normalize"),
    ],
)
def test_bad_recipes_are_refused_with_the_reason(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        flags(**changes)


def test_a_recipe_round_trips_through_the_run_options() -> None:
    recipe = flags(
        normalize="percentile",
        normalize_over="run",
        sources=["bm25=bm25_score", "dense=dist:cosine", "bm25_rank=r:rank"],
        fuse="rrf",
        weights="bm25=0.5,dense=2",
        rrf_k=30,
    )
    assert RankingRecipe.from_options(recipe.as_options()) == recipe
    assert recipe.carried_columns == ("bm25_score", "dist", "r")
    assert RankingRecipe.from_options(None).empty
