"""A corpus dataset on an S3 endpoint on loopback (moto's server): a Hive-partitioned prefix of many files is
validated and cut into shards of whole queries, written back to the store, as from local disk."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import CorpusError
from storage.corpus import CorpusColumns, iter_pairs, validate_corpus
from storage.location import S3Options, parse_location
from storage.shards.inputs import read_shard_input, write_shard_inputs
from storage.shards.plan import plan_shards
from testkit import corpora
from testkit.object_store import FAKE_CREDENTIALS, S3Endpoint, s3_server

BUCKET = "corpora"
COLUMNS = CorpusColumns()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[S3Endpoint]:
    with s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def store(endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Options:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return S3Options(endpoint.url, "us-east-1")


def upload(endpoint: S3Endpoint, files: dict[str, pa.Table]) -> None:
    for key, table in files.items():
        pq.write_table(table, f"{BUCKET}/{key}", filesystem=endpoint.filesystem())


def test_a_partitioned_dataset_on_s3_is_cut_into_whole_queries(
    endpoint: S3Endpoint, store: S3Options
) -> None:
    table = corpora.long_corpus(n_queries=40, docs_per_query=6, seed=21, shuffle=False)
    # Three partitions; query 5's last document sits in the last file, after other queries.
    parts = [table.slice(0, 35), table.slice(36, 100), table.slice(136), table.slice(35, 1)]
    upload(
        endpoint,
        {
            "night/day=1/part-0.parquet": parts[0],
            "night/day=2/part-0.parquet": parts[1],
            "night/day=3/part-0.parquet": pa.concat_tables([parts[2], parts[3]]),
            "night/_SUCCESS": pa.table({"x": [1]}),
        },
    )
    corpus = parse_location(f"s3://{BUCKET}/night/", store)

    summary = validate_corpus(corpus, COLUMNS)
    inputs_dir = parse_location(f"s3://{BUCKET}/inputs", store)
    inputs = write_shard_inputs(corpus, COLUMNS, summary, plan_shards(summary, 50), inputs_dir)

    assert (summary.n_pairs, summary.n_queries, summary.queries_contiguous) == (240, 40, False)
    assert sum(shard.n_pairs for shard in inputs) == 240
    pairs = pa.Table.from_batches(list(iter_pairs(corpus, COLUMNS)))
    assert sorted(pairs.column("doc_id").to_pylist()) == sorted(table.column("doc_id").to_pylist())
    seen: dict[object, int] = {}
    for shard in inputs:
        assert shard.location.uri.startswith(f"s3://{BUCKET}/inputs/shard-")
        for query_id in read_shard_input(shard.location).column("query_id").to_pylist():
            assert seen.setdefault(query_id, shard.shard_id) == shard.shard_id
    assert endpoint.keys(f"{BUCKET}/inputs") == [
        f"{BUCKET}/inputs/shard-{i:05d}.parquet" for i in range(len(inputs))
    ]


def test_dataset_errors_on_s3_name_the_object(endpoint: S3Endpoint, store: S3Options) -> None:
    good = corpora.long_corpus(n_queries=3, docs_per_query=2, seed=2)
    upload(endpoint, {"mixed/a.parquet": good, "mixed/b.parquet": good.drop_columns(["text"])})

    with pytest.raises(CorpusError) as caught:
        validate_corpus(parse_location(f"s3://{BUCKET}/mixed", store), COLUMNS)
    assert str(caught.value).startswith(
        f"s3://{BUCKET}/mixed/b.parquet: its schema differs from that of a.parquet"
    )

    with pytest.raises(CorpusError, match="corpus file not found"):
        validate_corpus(parse_location(f"s3://{BUCKET}/nothing-here", store), COLUMNS)
