"""Score files: per-shard Parquet output with ranks, and the merge of a run's shards into one file."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import RerankError
from storage.atomic import StagedFile, atomic_write
from storage.location import Location, guarded

METADATA_KEY = b"bulk_rerank"


@dataclass(frozen=True)
class PairProvenance:
    """Where each score of a shard came from: the tokens the model read (after truncation), whether the
    text was cut to fit (both null where the backend cannot tell), and the model spec that scored it."""

    tokens: pa.Array  # int32
    truncated: pa.Array  # bool
    model: str


class NonFiniteScoresError(RerankError):
    """Raised when a model scored some pairs NaN or infinite; the shard is retried, then marked failed."""


def ranks_within_queries(query_ids: pa.Array | pa.ChunkedArray, scores: np.ndarray) -> np.ndarray:
    """Rank 1 = highest score within each query; ties keep input order. Returns int32 per row."""
    if isinstance(query_ids, pa.ChunkedArray):
        query_ids = query_ids.combine_chunks()
    codes = pc.dictionary_encode(query_ids).indices.to_numpy(zero_copy_only=False)
    positions = np.arange(len(scores))
    order = np.lexsort((positions, -scores.astype(np.float64), codes))
    sorted_codes = codes[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    starts = np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
    ranks = np.empty(len(scores), dtype=np.int32)
    ranks[order] = (np.arange(len(order)) - starts + 1).astype(np.int32)
    return ranks


def scores_table(
    query_ids: pa.Array | pa.ChunkedArray,
    doc_ids: pa.Array | pa.ChunkedArray,
    scores: np.ndarray,
    metadata: Mapping[str, object],
    content_hashes: pa.Array | pa.ChunkedArray | None = None,
    provenance: PairProvenance | None = None,
    field_scores: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """The output schema: ``query_id, doc_id, score (float32), rank (int32)``, ``content_hash``
    (uint64, when given), ``tokens`` (int32), ``truncated`` (bool) and ``model`` (dictionary-encoded
    string) when ``provenance`` is given, ``score_<field>`` (float32) for each of ``field_scores`` (a
    multi-field run's fields), plus run metadata.
    Raises ``NonFiniteScoresError`` rather than let a NaN or infinite score into the output."""
    scores32 = np.asarray(scores, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(scores32))
    if bad.size:
        first = int(bad[0])
        raise NonFiniteScoresError(
            f"the model returned {bad.size} non-finite score(s) (first: query_id={query_ids[first]}, "
            f"doc_id={doc_ids[first]}); check the model's weights or its precision (RERANK_DTYPE)"
        )
    columns = {
        "query_id": query_ids,
        "doc_id": doc_ids,
        "score": pa.array(scores32, type=pa.float32()),
        "rank": pa.array(ranks_within_queries(query_ids, scores32), type=pa.int32()),
    }
    for name, values in (field_scores or {}).items():
        columns[f"score_{name}"] = pa.array(np.asarray(values, dtype=np.float32), type=pa.float32())
    if content_hashes is not None:
        columns["content_hash"] = content_hashes
    if provenance is not None:
        columns["tokens"] = provenance.tokens
        columns["truncated"] = provenance.truncated
        columns["model"] = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(scores32), dtype=np.int32)), pa.array([provenance.model])
        )
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


def write_scores(table: pa.Table, target: Location) -> None:
    """Publish ``table`` at ``target`` atomically."""
    with atomic_write(target) as temporary:
        _write_table(table, temporary)


def write_staged_scores(table: pa.Table, staged_file: StagedFile) -> None:
    """Write ``table`` in full to the staged file's temporary name, ready to be published."""
    _write_table(table, staged_file.temporary)
    staged_file.seal()


def read_scores(location: Location, columns: Sequence[str] | None = None) -> pa.Table:
    return guarded(
        lambda: pq.read_table(location.path, filesystem=location.filesystem, columns=columns), location
    )


def read_schema(location: Location) -> pa.Schema:
    """A scores file's schema (its footer only)."""
    return guarded(lambda: pq.read_schema(location.path, filesystem=location.filesystem), location)


def read_metadata(location: Location) -> dict[str, object]:
    schema = read_schema(location)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def merge_scores(
    shard_files: Sequence[Location],
    target: Location,
    metadata: Mapping[str, object],
    transform: Callable[[int, pa.Table], pa.Table] | None = None,
) -> int:
    """Concatenate shard score files (in the given order) into ``target``, one file at a time, and
    publish it atomically: complete or not at all. ``transform(i, table)``, given, turns the i-th file's
    table into what is written (the same columns for every file). Returns the number of rows written."""
    if not shard_files:
        raise ValueError("no shard score files to merge")

    def table_of(index: int) -> pa.Table:
        table = read_scores(shard_files[index])
        return transform(index, table) if transform is not None else table

    first = table_of(0)
    encoded = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
    schema = first.schema.remove_metadata().with_metadata(encoded)
    rows = 0
    with (
        atomic_write(target) as temporary,
        temporary.open_output() as sink,
        pq.ParquetWriter(sink, schema, compression="zstd") as out,
    ):
        for index in range(len(shard_files)):
            table = first if index == 0 else table_of(index)
            out.write_table(table.replace_schema_metadata(schema.metadata).cast(schema))
            rows += table.num_rows
    return rows


def _write_table(table: pa.Table, location: Location) -> None:
    guarded(
        lambda: pq.write_table(table, location.path, filesystem=location.filesystem, compression="zstd"),
        location,
    )
