from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.atomic import atomic_write
from storage.location import Location, parse_location
from storage.shards.scores import (
    merge_scores,
    ranks_within_queries,
    read_metadata,
    scores_table,
    write_scores,
)


def test_ranks_are_per_query_best_first_with_ties_in_input_order() -> None:
    query_ids = pa.array(["a", "b", "a", "a", "b", "a"])
    scores = np.array([0.1, 0.5, 0.9, 0.1, 0.7, 0.3], dtype=np.float32)
    assert ranks_within_queries(query_ids, scores).tolist() == [3, 2, 1, 4, 1, 2]


def test_ranks_with_integer_ids_and_chunked_input() -> None:
    query_ids = pa.chunked_array([pa.array([7, 7], pa.int64()), pa.array([3, 7], pa.int64())])
    ranks = ranks_within_queries(query_ids, np.array([0.0, 2.0, 5.0, 1.0]))
    assert ranks.dtype == np.int32
    assert ranks.tolist() == [3, 1, 1, 2]


def test_scores_table_schema_and_metadata(tmp_path: Path) -> None:
    table = scores_table(
        pa.array([1, 1, 2], pa.int64()),
        pa.array(["x", "y", "z"]),
        np.array([0.5, 0.25, 1.0]),
        {"model": "cross-encoder:m", "dtype": "float32"},
    )
    target = tmp_path / "shard-00000.parquet"
    write_scores(table, local(target))
    written = pq.read_table(target)
    assert written.schema.field("score").type == pa.float32()
    assert written.schema.field("rank").type == pa.int32()
    assert written.schema.field("query_id").type == pa.int64()
    assert written.column("rank").to_pylist() == [1, 2, 1]
    assert read_metadata(local(target)) == {"model": "cross-encoder:m", "dtype": "float32"}
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.parquet"]


@pytest.mark.parametrize("store", ["local", "memory"])
def test_failed_write_leaves_nothing_behind(tmp_path: Path, store: str) -> None:
    directory = local(tmp_path) if store == "local" else parse_location(f"memory://bucket-{tmp_path.name}")
    target = directory.join("out.parquet")
    with pytest.raises(RuntimeError), atomic_write(target) as temporary:
        temporary.write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert directory.files() == []


@pytest.mark.parametrize("store", ["local", "memory"])
def test_a_published_write_leaves_only_the_target(tmp_path: Path, store: str) -> None:
    directory = local(tmp_path) if store == "local" else parse_location(f"memory://bucket-{tmp_path.name}")
    target = directory.join("out.parquet")
    with atomic_write(target) as temporary:
        temporary.write_bytes(b"whole")
        assert not target.exists()
    assert [found.name for found in directory.files()] == ["out.parquet"]
    assert target.read_bytes() == b"whole"


def test_merge_keeps_shard_order_and_replaces_metadata(tmp_path: Path) -> None:
    files = []
    for shard in range(3):
        table = scores_table(
            pa.array([f"q{shard}"] * 2), pa.array(["d1", "d2"]), np.array([0.1, 0.2]), {"shard_id": shard}
        )
        files.append(local(tmp_path / f"shard-{shard:05d}.parquet"))
        write_scores(table, files[-1])
    out = tmp_path / "merged" / "scores.parquet"
    out.parent.mkdir()
    assert merge_scores(files, local(out), {"run_id": "r1"}) == 6
    merged = pq.read_table(out)
    assert merged.column("query_id").to_pylist() == ["q0", "q0", "q1", "q1", "q2", "q2"]
    assert read_metadata(local(out)) == {"run_id": "r1"}


def test_non_finite_scores_never_reach_the_output() -> None:
    from storage.shards.scores import NonFiniteScoresError

    with pytest.raises(NonFiniteScoresError, match=r"1 non-finite score.*query_id=q2, doc_id=d2"):
        scores_table(pa.array(["q1", "q2"]), pa.array(["d1", "d2"]), np.array([0.5, np.nan]), {})


def test_stale_temporaries_of_killed_attempts_are_swept(tmp_path: Path) -> None:
    from storage.atomic import remove_stale_temporaries

    target = tmp_path / "shard-00001.parquet"
    (tmp_path / ".shard-00001.parquet.0a1b2c3d4e5f.tmp").write_bytes(b"half a file")
    (tmp_path / ".shard-00002.parquet.0a1b2c3d4e5f.tmp").write_bytes(b"another shard's")
    assert remove_stale_temporaries(local(target)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [".shard-00002.parquet.0a1b2c3d4e5f.tmp"]


def local(path: Path) -> Location:
    return parse_location(str(path))
