"""Writing each shard's pairs to its own Parquet file, once, and reading one back on a worker.

How rows reach their shard file without loading the corpus:

- Every pair is routed by its query key: the summary's keys, sorted once, are binary-searched
  per batch (numpy ``searchsorted``), giving the shard of each pair.
- Contiguous corpora (each query's pairs form one block, as validation records) meet shards in
  increasing order, so batches are cut at shard boundaries and written straight through, with one
  Parquet writer open at a time.
- Otherwise (a query's rows interleaved with others) consecutive batches are gathered into runs
  of about 32 MB; each run is stably sorted by shard and appended, as one record batch, to an
  uncompressed Arrow IPC spill file in a local temporary directory. The spill file is then memory-mapped and
  read shard by shard: for every shard, its slice of each run, in run order. Slices of a memory
  map are zero-copy, so the process holds only pages of the file that the kernel can drop, never
  the corpus. The spill costs disk space about the size of the uncompressed pairs, and is deleted
  before returning.

Either way a shard's pairs keep their corpus order, and a writer buffers at most one row group. Each
row group gets its annotations (``annotations.PairAnnotations``: content hashes, reused scores) as it is
written, so a shard file is written once and never read back by the producer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import CorpusError
from storage.corpus.keys import id_keys
from storage.corpus.layout import CANONICAL_COLUMNS, CorpusColumns, pair_schema
from storage.corpus.reader import DEFAULT_BATCH_ROWS, UNREADABLE_ERRORS, iter_pairs
from storage.corpus.validation import CorpusSummary
from storage.location import Location
from storage.shards.annotations import PairAnnotations
from storage.shards.plan import ShardPlan

_ROW_GROUP_ROWS = 65536
_SPILL_NAME = ".pairs-by-shard.arrow"
_SPILL_RUN_BYTES = 32 << 20


@dataclass(frozen=True)
class ShardInput:
    """One written shard; ``location`` is the Parquet file that ``read_shard_input`` reads, and
    ``reused_pairs`` how many of its pairs carry a score from an earlier run."""

    shard_id: int
    location: Location
    n_pairs: int
    n_queries: int
    reused_pairs: int = 0


def shard_file_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.parquet"


def write_shard_inputs(
    corpus: Location,
    columns: CorpusColumns,
    summary: CorpusSummary,
    plans: list[ShardPlan],
    inputs_dir: Location,
    annotations: PairAnnotations | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> list[ShardInput]:
    """Write ``inputs_dir/shard-00000.parquet``, ... (canonical pairs, corpus order) for plans, each
    pair with its ``annotations`` when given (else the worker scores every pair)."""
    _check_plans(summary, plans)
    router = _ShardRouter(summary, plans)
    inputs_dir.make_dir()
    schema = pair_schema(summary.query_id_type, summary.doc_id_type)
    batches = iter_pairs(Path(corpus.path), columns, batch_rows)
    with _ShardFiles(inputs_dir, schema, plans, annotations) as shard_files:
        if summary.queries_contiguous:
            for batch in batches:
                shards = router.shards_of(batch)
                for start, stop in _runs(shards):
                    shard_files.write(int(shards[start]), batch.slice(start, stop - start))
        else:
            with tempfile.TemporaryDirectory(prefix="bulk-rerank-spill-") as spill_dir:
                _write_through_spill(batches, router, shard_files, Path(spill_dir) / _SPILL_NAME, schema)
        return shard_files.finish()


def read_shard_input(location: Location) -> pa.Table:
    """One shard's pairs: columns ``query_id, query, doc_id, text`` (then, as the producer writes them,
    ``content_hash`` and ``reused_score``), in corpus order. One shard is read, whole: its size is
    bounded by the shard size, whatever the corpus."""
    path = location.uri
    try:
        with location.open_input() as handle:
            table = pq.ParquetFile(handle).read()
    except UNREADABLE_ERRORS as exc:
        raise CorpusError(f"shard input {path} cannot be read: {exc}") from exc
    if tuple(table.column_names[: len(CANONICAL_COLUMNS)]) != CANONICAL_COLUMNS:
        raise CorpusError(
            f"shard input {path} has columns {table.column_names}, not {list(CANONICAL_COLUMNS)}"
        )
    return table


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
            raise _changed_since_validation()
        return self._sorted_shards[found]


def _runs(values: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive values."""
    starts, stops = _run_bounds(values)
    yield from zip(starts.tolist(), stops.tolist(), strict=True)


def _run_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return starts, np.r_[starts[1:], values.size]


def _write_through_spill(
    batches: Iterator[pa.RecordBatch],
    router: _ShardRouter,
    shard_files: _ShardFiles,
    spill_path: Path,
    schema: pa.Schema,
) -> None:
    slice_parts: list[np.ndarray] = []  # per spilled run: rows of (shard, run index, start, stop)
    try:
        with pa.OSFile(str(spill_path), "wb") as sink, pa.ipc.new_file(sink, schema) as spill:
            for run_index, (run, shards) in enumerate(_sorted_runs(batches, router, schema)):
                spill.write_batch(run)
                starts, stops = _run_bounds(shards)
                run_indices = np.full(starts.size, run_index)
                slice_parts.append(np.stack([shards[starts], run_indices, starts, stops], axis=1))
        if not slice_parts:
            return
        slices = np.concatenate(slice_parts)
        slices = slices[np.lexsort((slices[:, 1], slices[:, 0]))]
        with pa.memory_map(str(spill_path), "r") as mapped:
            reader = pa.ipc.open_file(mapped)
            runs = [reader.get_batch(index) for index in range(reader.num_record_batches)]
            for shard, run_index, start, stop in slices.tolist():
                shard_files.write(shard, runs[run_index].slice(start, stop - start))
            # Write out the buffered slices while the memory map they point into is still open.
            shard_files.close_current()
    finally:
        spill_path.unlink(missing_ok=True)


def _sorted_runs(
    batches: Iterator[pa.RecordBatch], router: _ShardRouter, schema: pa.Schema
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Consecutive batches gathered into runs of about _SPILL_RUN_BYTES, each stably sorted by shard.

    Bigger runs mean fewer, larger slices per shard when the runs are read back.
    """
    pending: list[pa.RecordBatch] = []
    pending_shards: list[np.ndarray] = []
    pending_bytes = 0
    for batch in batches:
        pending.append(batch)
        pending_shards.append(router.shards_of(batch))
        pending_bytes += batch.nbytes
        if pending_bytes >= _SPILL_RUN_BYTES:
            yield _sorted_run(pending, pending_shards, schema)
            pending, pending_shards, pending_bytes = [], [], 0
    if pending:
        yield _sorted_run(pending, pending_shards, schema)


def _sorted_run(
    batches: list[pa.RecordBatch], shards: list[np.ndarray], schema: pa.Schema
) -> tuple[pa.RecordBatch, np.ndarray]:
    all_shards = np.concatenate(shards)
    order = np.argsort(all_shards, kind="stable")
    table = pa.Table.from_batches(batches, schema).take(pa.array(order))
    run = pa.RecordBatch.from_arrays([column.combine_chunks() for column in table.columns], schema=schema)
    return run, all_shards[order]


class _ShardFiles:
    """Writes shard files one at a time, in increasing shard order, checking counts against plans, and
    annotates each row group as it is written."""

    def __init__(
        self,
        inputs_dir: Location,
        schema: pa.Schema,
        plans: list[ShardPlan],
        annotations: PairAnnotations | None,
    ) -> None:
        self._inputs_dir = inputs_dir
        self._schema = schema
        self._file_schema = schema if annotations is None else annotations.schema(schema)
        self._annotations = annotations
        self._plans = plans
        self._written: list[ShardInput] = []
        self._shard = -1
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._shard_rows = 0
        self._shard_reused = 0

    def __enter__(self) -> _ShardFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, shard: int, pairs: pa.RecordBatch) -> None:
        if shard != self._shard:
            if shard < self._shard:
                raise _changed_since_validation()
            self.close_current()
            self._open_shard(shard)
        self._pending.append(pairs)
        self._pending_rows += pairs.num_rows
        self._shard_rows += pairs.num_rows
        if self._pending_rows >= _ROW_GROUP_ROWS:
            self._flush()

    def finish(self) -> list[ShardInput]:
        """Close the last shard; every planned shard must have been written in full."""
        self.close_current()
        if len(self._written) != len(self._plans):
            raise _changed_since_validation()
        return self._written

    def _open_shard(self, shard: int) -> None:
        if shard != len(self._written):
            raise _changed_since_validation()
        self._shard = shard
        self._shard_rows = 0
        self._shard_reused = 0
        target = self._inputs_dir.join(shard_file_name(shard))
        self._writer = pq.ParquetWriter(target.path, self._file_schema, filesystem=target.filesystem)

    def _flush(self) -> None:
        if self._pending and self._writer is not None:
            # Many small slices (interleaved corpora) write far faster as one contiguous chunk.
            table = pa.Table.from_batches(self._pending, self._schema).combine_chunks()
            if self._annotations is not None:
                table, reused = self._annotations.annotate(table)
                self._shard_reused += reused
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._pending = []
        self._pending_rows = 0

    def close_current(self) -> None:
        """Write out and close the shard being written, if any."""
        if self._writer is None:
            return
        self._flush()
        self._writer.close()
        self._writer = None
        plan = self._plans[self._shard]
        if self._shard_rows != plan.n_pairs:
            raise _changed_since_validation()
        location = self._inputs_dir.join(shard_file_name(self._shard))
        written = ShardInput(self._shard, location, self._shard_rows, plan.n_queries, self._shard_reused)
        self._written.append(written)


def _changed_since_validation() -> CorpusError:
    return CorpusError("the corpus file changed since it was validated; validate it again and resubmit")
