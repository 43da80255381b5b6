"""First-stage columns named by --source travel with each pair into the shard inputs, from long and
nested corpora; a missing or non-numeric one is refused by validation with its name."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import CorpusError
from storage.corpus import CorpusColumns, validate_corpus
from storage.corpus.reader import iter_pairs
from storage.shards.inputs import read_carried, write_shard_inputs
from storage.shards.plan import plan_shards
from testkit import corpora

LONG = pa.table(
    {
        "query_id": [1, 1, 2],
        "query": ["q1", "q1", "q2"],
        "doc_id": ["a", "b", "c"],
        "text": ["ta", "tb", "tc"],
        "bm25": pa.array([3, 7, 1], pa.int32()),
        "distance": pa.array([0.25, None, 0.5], pa.float32()),
        "label": ["x", "y", "z"],
    }
)


def test_long_corpus_columns_reach_the_shard_inputs(tmp_path: Path) -> None:
    corpus = corpora.location(corpora.write(LONG, tmp_path / "corpus.parquet"))
    columns = CorpusColumns(carried=("bm25", "distance"))
    summary = validate_corpus(corpus, columns)
    [batch] = list(iter_pairs(corpus, columns))
    assert batch.schema.names == ["query_id", "query", "doc_id", "text", "carried.bm25", "carried.distance"]
    inputs = write_shard_inputs(
        corpus, columns, summary, plan_shards(summary, 2), corpora.location(tmp_path / "in")
    )
    carried = [read_carried(shard.location, ("bm25", "distance")) for shard in inputs]
    assert carried[0]["bm25"].tolist() == [3.0, 7.0] and carried[1]["bm25"].tolist() == [1.0]
    assert carried[0]["distance"][0] == 0.25 and carried[1]["distance"].tolist() == [0.5]
    assert str(carried[0]["distance"][1]) == "nan"  # no value: NaN, left out of every statistic


def test_nested_corpus_candidates_carry_their_fields(tmp_path: Path) -> None:
    candidate = pa.struct([("doc_id", pa.string()), ("text", pa.string()), ("bm25", pa.float64())])
    nested = pa.table(
        {
            "query_id": ["q1", "q2"],
            "query": ["one", "two"],
            "candidates": pa.array(
                [
                    [{"doc_id": "a", "text": "x", "bm25": 1.5}, {"doc_id": "b", "text": "y", "bm25": 0.5}],
                    [{"doc_id": "c", "text": "z", "bm25": 2.0}],
                ],
                pa.list_(candidate),
            ),
        }
    )
    corpus = corpora.location(corpora.write(nested, tmp_path / "nested.parquet"))
    columns = CorpusColumns(carried=("bm25",))
    validate_corpus(corpus, columns)
    [batch] = list(iter_pairs(corpus, columns))
    assert batch.column("carried.bm25").to_pylist() == [1.5, 0.5, 2.0]
    with pytest.raises(
        CorpusError, match=r"no column 'dense' to read first-stage values from in the 'candidates'"
    ):
        validate_corpus(corpus, CorpusColumns(carried=("dense",)))


def test_a_missing_or_non_numeric_column_is_named(tmp_path: Path) -> None:
    corpus = corpora.location(corpora.write(LONG, tmp_path / "corpus.parquet"))
    with pytest.raises(
        CorpusError, match=r"no column 'bm25_score' to read first-stage values from \(there are"
    ):
        validate_corpus(corpus, CorpusColumns(carried=("bm25_score",)))
    with pytest.raises(
        CorpusError, match="column 'label' has type string; first-stage values must be numbers"
    ):
        validate_corpus(corpus, CorpusColumns(carried=("label",)))
