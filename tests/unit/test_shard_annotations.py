"""Shard inputs are written once, each row group with its annotations: every pair's content hash and, for
an incremental run, the score carried over from an earlier run; the worker scores only the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage.shards.inputs
import storage.shards.shard_files
import storage.shards.spill
from storage.corpus import CANONICAL_COLUMNS, CorpusColumns, validate_corpus
from storage.shards.annotations import (
    CONTENT_HASH,
    REUSED_SCORE,
    REUSED_TOKENS,
    REUSED_TRUNCATED,
    PairAnnotations,
    merge_carried,
    merge_reused,
    scores_to_compute,
)
from storage.shards.content_hash import scoring_fingerprint
from storage.shards.inputs import read_shard_input, write_shard_inputs
from storage.shards.plan import plan_shards
from storage.shards.reuse import PreviousScores
from testkit.corpora import location, long_corpus, write
from tests.unit.test_content_hash import per_pair_hashes

FINGERPRINT = scoring_fingerprint("cross-encoder:tiny", None)


def _reference_hashes(pairs: pa.Table) -> np.ndarray:
    return per_pair_hashes(FINGERPRINT, pairs.column("query").to_pylist(), pairs.column("text").to_pylist())


def _write_inputs(
    tmp_path: Path, corpus: pa.Table, annotations: PairAnnotations | None, shard_pairs: int = 40
) -> list[storage.shards.inputs.ShardInput]:
    path = write(corpus, tmp_path / "corpus.parquet", row_group_size=64)
    summary = validate_corpus(location(path), CorpusColumns(), batch_rows=8)
    plans = plan_shards(summary, shard_pairs)
    inputs_dir = location(tmp_path / "inputs")
    return write_shard_inputs(
        location(path), CorpusColumns(), summary, plans, inputs_dir, annotations, batch_rows=8
    )


@pytest.mark.parametrize("interleaved", [False, True], ids=["contiguous", "interleaved"])
def test_each_pair_is_written_with_its_hash_and_any_reused_score(
    tmp_path: Path, interleaved: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches, spill runs and row groups: several row groups per shard, annotated one by one.
    monkeypatch.setattr(storage.shards.shard_files, "ROW_GROUP_ROWS", 16)
    monkeypatch.setattr(storage.shards.spill, "RUN_BYTES", 1)
    corpus = long_corpus(n_queries=30, docs_per_query=7, seed=3, shuffle=interleaved)
    earlier = _reference_hashes(corpus)[::3]  # an earlier run scored every third pair
    earlier_scores = np.arange(earlier.size, dtype=np.float32) / 7
    # Its provenance: token counts, and truncation known for all but every fifth pair.
    earlier_tokens = np.arange(earlier.size, dtype=np.int64) + 10
    earlier_truncated = np.where(np.arange(earlier.size) % 5 == 0, -1, np.arange(earlier.size) % 2).astype(
        np.int8
    )
    previous = PreviousScores(earlier, earlier_scores, earlier_tokens, earlier_truncated)

    inputs = _write_inputs(tmp_path, corpus, PairAnnotations(FINGERPRINT, previous))

    score_of = dict(zip(earlier.tolist(), earlier_scores.tolist(), strict=True))
    tokens_of = dict(zip(earlier.tolist(), earlier_tokens.tolist(), strict=True))
    truncated_of = {
        h: None if t < 0 else bool(t)
        for h, t in zip(earlier.tolist(), earlier_truncated.tolist(), strict=True)
    }
    reused = 0
    for shard in inputs:
        pairs = read_shard_input(shard.location)
        assert pairs.column_names == [
            *CANONICAL_COLUMNS,
            CONTENT_HASH,
            REUSED_SCORE,
            REUSED_TOKENS,
            REUSED_TRUNCATED,
        ]
        assert pq.ParquetFile(shard.location.path).num_row_groups > 1
        hashes = pairs.column(CONTENT_HASH).to_pylist()
        assert hashes == _reference_hashes(pairs).tolist()
        assert pairs.column(REUSED_SCORE).to_pylist() == [score_of.get(h) for h in hashes]
        assert pairs.column(REUSED_TOKENS).to_pylist() == [tokens_of.get(h) for h in hashes]
        assert pairs.column(REUSED_TRUNCATED).to_pylist() == [truncated_of.get(h) for h in hashes]
        assert shard.reused_pairs == sum(h in score_of for h in hashes)
        reused += shard.reused_pairs
    assert reused == len(score_of) == 70


def test_a_first_run_reuses_nothing_and_scores_every_pair(tmp_path: Path) -> None:
    corpus = long_corpus(n_queries=5, docs_per_query=4, seed=1)
    [shard] = _write_inputs(tmp_path, corpus, PairAnnotations(FINGERPRINT), shard_pairs=100)
    pairs = read_shard_input(shard.location)
    assert shard.reused_pairs == 0 and pairs.column(REUSED_SCORE).null_count == pairs.num_rows
    assert scores_to_compute(pairs).tolist() == list(range(pairs.num_rows))


def test_the_worker_scores_only_pairs_without_a_reused_score(tmp_path: Path) -> None:
    corpus = long_corpus(n_queries=4, docs_per_query=5, seed=2, shuffle=False)
    previous = PreviousScores(_reference_hashes(corpus)[:6], np.full(6, 0.5, dtype=np.float32))
    [shard] = _write_inputs(tmp_path, corpus, PairAnnotations(FINGERPRINT, previous), shard_pairs=100)
    pairs = read_shard_input(shard.location)

    rows = scores_to_compute(pairs)
    assert rows.tolist() == list(range(6, 20))
    merged = merge_reused(pairs, rows, np.full(rows.size, -1.0, dtype=np.float32))
    assert merged.tolist() == [0.5] * 6 + [-1.0] * 14
    # The earlier output recorded no provenance: carried pairs have none; scored pairs get theirs.
    tokens = merge_carried(pairs, REUSED_TOKENS, rows, np.arange(rows.size) + 3, pa.int32())
    assert tokens.type == pa.int32() and tokens.to_pylist() == [None] * 6 + list(range(3, 17))
    truncated = merge_carried(pairs, REUSED_TRUNCATED, rows, np.arange(rows.size) % 2 == 0, pa.bool_())
    assert truncated.to_pylist() == [None] * 6 + [i % 2 == 0 for i in range(14)]
    unknown = merge_carried(pairs, REUSED_TRUNCATED, rows, None, pa.bool_())
    assert unknown.null_count == 20


def test_inputs_without_annotations_hold_the_canonical_pairs_only(tmp_path: Path) -> None:
    corpus = long_corpus(n_queries=3, docs_per_query=2, seed=4)
    [shard] = _write_inputs(tmp_path, corpus, None, shard_pairs=100)
    pairs = read_shard_input(shard.location)
    assert tuple(pairs.column_names) == CANONICAL_COLUMNS and shard.reused_pairs == 0
    assert scores_to_compute(pairs).size == pairs.num_rows
