"""Writing each shard's pairs to its own Parquet file, once, and reading one back on a worker.

How rows reach their shard file without loading the corpus:

- Every pair is routed by its query key: the summary's keys, sorted once, are binary-searched
  per batch (numpy ``searchsorted``), giving the shard of each pair.
- Contiguous corpora (each query's pairs form one block, as validation records) meet shards in
  increasing order, so batches are cut at shard boundaries and written straight through, with one
  Parquet writer open at a time.
- Otherwise (a query's rows interleaved with others, or spread over several files of a dataset) the
  pairs go through a local spill file that groups them by shard (``spill``).

Either way a shard's pairs keep their corpus order, and a writer buffers at most one row group. Each
row group gets its annotations (``annotations.PairAnnotations``: content hashes, reused scores) as it is
written (``shard_files``), so a shard file is written once and never read back by the producer.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import CorpusError, StorageError
from storage.corpus.keys import id_keys
from storage.corpus.layout import CANONICAL_COLUMNS, CorpusColumns, carried_column, pair_schema
from storage.corpus.reader import DEFAULT_BATCH_ROWS, iter_pairs
from storage.corpus.source import UNREADABLE_ERRORS
from storage.corpus.validation import CorpusSummary
from storage.location import Location
from storage.shards.annotations import PairAnnotations
from storage.shards.plan import ShardPlan
from storage.shards.shard_files import ShardFiles, ShardInput, changed_since_validation, shard_file_name
from storage.shards.spill import run_bounds, write_through_spill

__all__ = ["ShardInput", "read_carried", "read_shard_input", "shard_file_name", "write_shard_inputs"]

_SHARD_READ_ERRORS: tuple[type[Exception], ...] = (StorageError, *UNREADABLE_ERRORS)
# A carried column the file lacks (a run submitted without that --source).
_CARRIED_READ_ERRORS: tuple[type[Exception], ...] = (*_SHARD_READ_ERRORS, KeyError)


def write_shard_inputs(
    corpus: Location,
    columns: CorpusColumns,
    summary: CorpusSummary,
    plans: list[ShardPlan],
    inputs_dir: Location,
    annotations: PairAnnotations | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    metadata: dict[bytes, bytes] | None = None,
) -> list[ShardInput]:
    """Write ``inputs_dir/shard-00000.parquet``, ... (canonical pairs, corpus order) for plans, each
    pair with its ``annotations`` when given (else the worker scores every pair); ``metadata`` goes into
    every file's schema."""
    _check_plans(summary, plans)
    router = _ShardRouter(summary, plans)
    inputs_dir.make_dir()
    schema = pair_schema(summary.query_id_type, summary.doc_id_type, columns.carried, columns.fields)
    if metadata:  # what the workers read beside the pairs (the fields' recipe)
        schema = schema.with_metadata(metadata)
    batches = iter_pairs(corpus, columns, batch_rows)
    with ShardFiles(inputs_dir, schema, plans, annotations) as shard_files:
        if summary.queries_contiguous:
            for batch in batches:
                shards = router.shards_of(batch)
                starts, stops = run_bounds(shards)
                for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
                    shard_files.write(int(shards[start]), batch.slice(start, stop - start))
        else:
            write_through_spill(batches, router.shards_of, shard_files, schema)
        return shard_files.finish()


def read_shard_input(location: Location) -> pa.Table:
    """One shard's pairs: columns ``query_id, query, doc_id, text`` (then, as the producer writes them,
    ``content_hash`` and ``reused_score``), in corpus order. One shard is read, whole: its size is
    bounded by the shard size, whatever the corpus."""
    try:
        with location.open_input() as source:
            table = pq.ParquetFile(source).read()
    except _SHARD_READ_ERRORS as exc:
        raise CorpusError(f"shard input {location.uri} cannot be read: {exc}") from exc
    if tuple(table.column_names[: len(CANONICAL_COLUMNS)]) != CANONICAL_COLUMNS:
        raise CorpusError(
            f"shard input {location.uri} has columns {table.column_names}, not {list(CANONICAL_COLUMNS)}"
        )
    return table


def read_carried(location: Location, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The carried columns ``names`` of one shard input, float64 in the shard's order, NaN where the
    corpus had no value."""
    if not names:
        return {}
    wanted = [carried_column(name) for name in names]
    try:
        with location.open_input() as source:
            table = pq.ParquetFile(source).read(columns=wanted)
    except _CARRIED_READ_ERRORS as exc:
        raise CorpusError(f"shard input {location.uri} cannot give columns {wanted}: {exc}") from exc
    return {
        name: table.column(column).to_numpy().astype(np.float64, copy=False)
        for name, column in zip(names, wanted, strict=True)
    }


def _check_plans(summary: CorpusSummary, plans: list[ShardPlan]) -> None:
    expected_first = 0
    for index, plan in enumerate(plans):
        if plan.shard_id != index or plan.first_query != expected_first or plan.n_queries < 1:
            raise ValueError(f"shard plans must cover the queries in order; plan {index} is {plan}")
        expected_first = plan.stop_query
    if expected_first != summary.n_queries:
        raise ValueError(f"shard plans cover {expected_first} of {summary.n_queries} queries")


class _ShardRouter:
    """The shard of each pair, from its query key."""

    def __init__(self, summary: CorpusSummary, plans: list[ShardPlan]) -> None:
        shard_of_query = np.repeat(np.arange(len(plans), dtype=np.int64), [p.n_queries for p in plans])
        order = np.argsort(summary.query_keys, kind="stable")
        self._sorted_keys = summary.query_keys[order]
        self._sorted_shards = shard_of_query[order]
        self._seed = summary.key_seed

    def shards_of(self, pairs: pa.RecordBatch) -> np.ndarray:
        keys = id_keys(pairs.column("query_id"), self._seed)
        found = np.minimum(np.searchsorted(self._sorted_keys, keys), self._sorted_keys.size - 1)
        if not np.array_equal(self._sorted_keys[found], keys):
            raise changed_since_validation()
        return self._sorted_shards[found]
