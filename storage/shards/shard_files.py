"""Shard input files written one at a time, in shard order, each row group annotated as it is written.

The caller's thread gathers a shard's pairs, checks them against the plan and annotates them (content
hashes, reused scores: Python-bound work); a background thread encodes and writes the Parquet files,
which runs outside the GIL, so the two overlap on two cores. A bounded queue between them keeps at most
a few row groups in flight. Shard inputs are read whole by one worker each, so they carry no statistics
and only the repeated columns are dictionary-encoded.

On an object store each file is encoded into memory and uploaded, whole, by a small pool of threads, so
that several uploads are in flight at once: one PUT after another would leave the producer waiting on the
store's latency for every shard.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import CorpusError
from storage.location import Location
from storage.shards.annotations import PairAnnotations
from storage.shards.plan import ShardPlan

ROW_GROUP_ROWS = 65536
_IN_FLIGHT = 4
_UPLOADS_IN_FLIGHT = 8
# Repeated values only: dictionary pages for unique texts and ids are built and then thrown away.
_DICTIONARY_COLUMNS = ["query_id", "query"]


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


def changed_since_validation() -> CorpusError:
    return CorpusError("the corpus changed since it was validated; validate it again and resubmit")


class ShardFiles:
    """Writes shard files one at a time, in increasing shard order, checking counts against plans.

    Use as a context manager; ``finish`` returns once every file is complete."""

    def __init__(
        self,
        inputs_dir: Location,
        schema: pa.Schema,
        plans: list[ShardPlan],
        annotations: PairAnnotations | None,
    ) -> None:
        self._inputs_dir = inputs_dir
        self._schema = schema
        self._annotations = annotations
        self._plans = plans
        self._written: list[ShardInput] = []
        self._shard = -1
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._shard_rows = 0
        self._shard_reused = 0
        file_schema = schema if annotations is None else annotations.schema(schema)
        self._writer = _ParquetWriterThread(file_schema)

    def __enter__(self) -> ShardFiles:
        self._writer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer.stop()

    def write(self, shard: int, pairs: pa.RecordBatch) -> None:
        if shard != self._shard:
            if shard < self._shard:
                raise changed_since_validation()
            self._close_current()
            if shard != len(self._written):
                raise changed_since_validation()
            self._shard, self._shard_rows, self._shard_reused = shard, 0, 0
        self._pending.append(pairs)
        self._pending_rows += pairs.num_rows
        self._shard_rows += pairs.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def finish(self) -> list[ShardInput]:
        """Close the last shard and wait for every file; every planned shard must have been written in
        full."""
        self._close_current()
        self._writer.stop()
        if len(self._written) != len(self._plans):
            raise changed_since_validation()
        return self._written

    def _flush(self) -> None:
        if self._pending:
            # Many small slices (interleaved corpora) write far faster as one contiguous chunk, which
            # also owns its memory once handed to the writer thread.
            table = pa.Table.from_batches(self._pending, self._schema).combine_chunks()
            if self._annotations is not None:
                table, reused = self._annotations.annotate(table)
                self._shard_reused += reused
            self._writer.append(self._inputs_dir.join(shard_file_name(self._shard)), table)
        self._pending = []
        self._pending_rows = 0

    def _close_current(self) -> None:
        if self._shard < 0 or len(self._written) > self._shard:
            return
        self._flush()
        self._writer.close_file()
        plan = self._plans[self._shard]
        if self._shard_rows != plan.n_pairs:
            raise changed_since_validation()
        location = self._inputs_dir.join(shard_file_name(self._shard))
        self._written.append(
            ShardInput(self._shard, location, self._shard_rows, plan.n_queries, self._shard_reused)
        )


_Job = tuple[Location, pa.Table] | None  # a table to append to a file; None closes the file


class _ParquetWriterThread:
    """One Parquet file open at a time, written by a thread of its own from a bounded queue."""

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema
        self._jobs: queue.Queue[_Job | _Stop] = queue.Queue(maxsize=_IN_FLIGHT)
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._error: BaseException | None = None
        self._uploads = _Uploads()

    def start(self) -> None:
        self._thread.start()

    def append(self, location: Location, table: pa.Table) -> None:
        self._put((location, table))

    def close_file(self) -> None:
        self._put(None)

    def stop(self) -> None:
        """Close the open file and end the thread; raise what it failed with, if anything."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
        upload_error = self._uploads.finish()
        self._raise_failure()
        if upload_error is not None:
            raise upload_error

    def _put(self, job: _Job) -> None:
        self._raise_failure()
        self._jobs.put(job)

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        writer: pq.ParquetWriter | None = None
        target: Location | None = None
        in_memory: pa.BufferOutputStream | None = None
        try:
            while not isinstance(job := self._jobs.get(), _Stop):
                if job is None:
                    if writer is not None:
                        writer.close()
                        if in_memory is not None and target is not None:
                            self._uploads.submit(target, in_memory.getvalue())
                    writer, target, in_memory = None, None, None
                    continue
                location, table = job
                if writer is None:
                    target = location
                    in_memory = None if location.is_local else pa.BufferOutputStream()
                    writer = pq.ParquetWriter(
                        location.path if in_memory is None else in_memory,
                        self._schema,
                        filesystem=location.filesystem if in_memory is None else None,
                        compression=_compression(location),
                        use_dictionary=_DICTIONARY_COLUMNS,
                        write_statistics=False,
                    )
                writer.write_table(table, row_group_size=max(1, table.num_rows))
            if writer is not None:
                writer.close()
                if in_memory is not None and target is not None:
                    self._uploads.submit(target, in_memory.getvalue())
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc
            if writer is not None:
                _close_quietly(writer)
            while self._jobs.get() is not _STOP:
                pass


class _Uploads:
    """Whole files put on an object store by a few threads, at most ``_UPLOADS_IN_FLIGHT`` at a time."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.Semaphore(_UPLOADS_IN_FLIGHT)
        self._futures: list[Future[None]] = []

    def submit(self, target: Location, content: pa.Buffer) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_UPLOADS_IN_FLIGHT, thread_name_prefix="shard-upload")
        self._slots.acquire()
        future = self._pool.submit(target.write_bytes, content)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def finish(self) -> BaseException | None:
        """Wait for every upload; the first error, if any."""
        if self._pool is None:
            return None
        self._pool.shutdown(wait=True)
        errors = [future.exception() for future in self._futures]
        return next((error for error in errors if error is not None), None)


def _compression(location: Location) -> str:
    """None on local disk, where compressing would cost the producer more time than the bytes it saves
    (lz4 took ~1 µs a pair, most of writing the file); lz4 on an object store, where bytes cost time."""
    return "none" if location.is_local else "lz4"


def _close_quietly(writer: pq.ParquetWriter) -> None:
    """Close a writer that already failed; the first error is the one to report."""
    with contextlib.suppress(Exception):
        writer.close()


class _Stop:
    """Ends the writer thread."""


_STOP = _Stop()
