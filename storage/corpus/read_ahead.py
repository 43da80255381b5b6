"""Reads of a corpus decoded on background threads, handed over in order, a bounded number of batches
ahead.

A read is a run of consecutive row groups of one file, with a reader of its own. Two reads are decoded
at once, each by one thread that puts its batches into a small queue of its own: Parquet decoding runs
outside the GIL, so it overlaps the caller's work and uses a second core. Memory stays a few batches per
read however large the row groups are.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from core.errors import CorpusError
from storage.corpus.source import UNREADABLE_ERRORS, CorpusFile

_PARALLEL_READS = 2
_BATCHES_AHEAD = 2
_DECODE_ERRORS: tuple[type[Exception], ...] = (CorpusError, *UNREADABLE_ERRORS)
_POLL_S = 0.1


@dataclass(frozen=True)
class Read:
    """Consecutive row groups of one file, and how to read them."""

    file: CorpusFile
    row_groups: list[int]
    columns: list[str]
    batch_rows: int
    pre_buffer: bool


class ReadError(Exception):
    """Raised, after its decoded batches, when a read failed part way."""

    def __init__(self, read: Read, cause: Exception) -> None:
        super().__init__(str(cause))
        self.read = read
        self.cause = cause


def decoded_batches(reads: Iterator[Read]) -> Iterator[tuple[Read, pa.RecordBatch]]:
    """Every batch of every read, in order, each with its read."""
    stop = threading.Event()
    active: deque[_Decoding] = deque()
    try:
        for read in reads:
            active.append(_Decoding(read, stop))
            if len(active) < _PARALLEL_READS:
                continue
            yield from active.popleft().batches()
        while active:
            yield from active.popleft().batches()
    finally:
        stop.set()
        for decoding in active:
            decoding.join()


class _End:
    """Marks the end of a read's batches."""


_END = _End()


class _Decoding:
    """One read decoded by a thread of its own into a bounded queue."""

    def __init__(self, read: Read, stop: threading.Event) -> None:
        self._read = read
        self._stop = stop
        self._queue: queue.Queue[pa.RecordBatch | Exception | _End] = queue.Queue(maxsize=_BATCHES_AHEAD)
        self._thread = threading.Thread(target=self._decode, name="corpus-read", daemon=True)
        self._thread.start()

    def batches(self) -> Iterator[tuple[Read, pa.RecordBatch]]:
        while not isinstance(item := self._queue.get(), _End):
            if isinstance(item, _DECODE_ERRORS):
                raise ReadError(self._read, item)
            if isinstance(item, Exception):
                raise item
            yield self._read, item
        self._thread.join()

    def join(self) -> None:
        self._thread.join()

    def _decode(self) -> None:
        read = self._read
        try:
            with read.file.open(read.pre_buffer) as parquet_file:
                batches = parquet_file.iter_batches(
                    batch_size=read.batch_rows, row_groups=read.row_groups, columns=read.columns
                )
                for batch in batches:
                    if not self._put(batch):
                        return
        except Exception as exc:  # handed to the caller's thread
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: pa.RecordBatch | Exception | _End) -> bool:
        """Queue item unless the reader was abandoned; False when it was."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False
