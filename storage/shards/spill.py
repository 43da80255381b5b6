"""Shard inputs of a corpus whose queries are not contiguous: their rows gathered through a spill file.

Consecutive batches are gathered into runs of about 32 MB; each run is stably sorted by shard and
appended to an uncompressed Arrow IPC file in a local temporary directory (never next to the shard
inputs, which may be on an object store), one record batch per (run, shard) slice. The file is then read
back shard by shard, each shard's slices in run order, one record batch at a time: the process holds a
run while writing and a slice while reading, never the corpus. The spill costs local disk space about
the size of the uncompressed pairs, and is deleted before returning.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.shards.shard_files import ShardFiles

RUN_BYTES = 32 << 20


def write_through_spill(
    batches: Iterator[pa.RecordBatch],
    shards_of: Callable[[pa.RecordBatch], np.ndarray],
    shard_files: ShardFiles,
    schema: pa.Schema,
) -> None:
    """Write every pair of batches to its shard (``shards_of`` gives the shard of each pair), each
    shard's pairs in their corpus order."""
    with tempfile.TemporaryDirectory(prefix="rerank-spill-") as directory:
        path = Path(directory) / "pairs-by-shard.arrow"
        index_parts: list[np.ndarray] = []  # per run: rows of (shard, run, record batch)
        written = 0
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as spill:
            for run_index, (run, shards) in enumerate(_sorted_runs(batches, shards_of, schema)):
                starts, stops = run_bounds(shards)
                for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
                    spill.write_batch(run.slice(start, stop - start))
                batch_indices = np.arange(written, written + starts.size)
                index_parts.append(
                    np.stack([shards[starts], np.full(starts.size, run_index), batch_indices], 1)
                )
                written += starts.size
        if not index_parts:
            return
        index = np.concatenate(index_parts)
        index = index[np.lexsort((index[:, 1], index[:, 0]))]
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_file(source)
            for shard, _, batch_index in index.tolist():
                shard_files.write(shard, reader.get_batch(batch_index))


def run_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the runs of equal consecutive values."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return starts, np.r_[starts[1:], values.size]


def _sorted_runs(
    batches: Iterator[pa.RecordBatch], shards_of: Callable[[pa.RecordBatch], np.ndarray], schema: pa.Schema
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Consecutive batches gathered into runs of about RUN_BYTES, each stably sorted by shard.

    Bigger runs mean fewer, larger slices per shard when the runs are read back.
    """
    pending: list[pa.RecordBatch] = []
    pending_shards: list[np.ndarray] = []
    pending_bytes = 0
    for batch in batches:
        pending.append(batch)
        pending_shards.append(shards_of(batch))
        pending_bytes += batch.nbytes
        if pending_bytes >= RUN_BYTES:
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
