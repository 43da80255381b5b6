"""Duplicate detection over one 64-bit hash per pair, in memory that does not grow with the corpus.

Hashes are kept in memory up to a budget; beyond it they are partitioned by their top bits into
buckets, each appended to its own file in a local temporary directory. Equal hashes share a bucket, so
the repeated ones are found one bucket at a time: memory is the budget plus one bucket (1/256 of the
hashes), and the disk holds 8 bytes per pair until validation ends.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np

_MEMORY_HASHES = 1 << 20  # 8 MiB
_BUCKET_BITS = 8


class PairHashes:
    """Append hashes batch by batch, then ask for the ``repeated`` ones; use as a context manager so
    that spilled buckets are removed."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._buffered = 0
        self._spill_dir: Path | None = None

    def __enter__(self) -> PairHashes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def append(self, hashes: np.ndarray) -> None:
        self._parts.append(np.asarray(hashes, dtype=np.uint64))
        self._buffered += hashes.size
        if self._buffered >= _MEMORY_HASHES:
            self._spill()

    def repeated(self) -> np.ndarray:
        """The distinct hashes seen more than once, sorted."""
        if self._spill_dir is None:
            return _repeated(self._concatenated())
        self._spill()
        found = [_repeated(np.fromfile(path, dtype=np.uint64)) for path in self._bucket_files()]
        return np.concatenate(found) if found else np.empty(0, dtype=np.uint64)

    def close(self) -> None:
        self._parts, self._buffered = [], 0
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None

    def _concatenated(self) -> np.ndarray:
        hashes = np.concatenate(self._parts) if self._parts else np.empty(0, dtype=np.uint64)
        self._parts, self._buffered = [], 0
        return hashes

    def _spill(self) -> None:
        hashes = self._concatenated()
        if hashes.size == 0:
            return
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="rerank-pair-hashes-"))
        # Sorted in place, each bucket is one slice: no index or partitioned copy held beside the hashes.
        hashes.sort()
        edges = np.arange(1 << _BUCKET_BITS, dtype=np.uint64) << np.uint64(64 - _BUCKET_BITS)
        bounds = [*np.searchsorted(hashes, edges).tolist(), hashes.size]
        for bucket, (start, stop) in enumerate(itertools.pairwise(bounds)):
            if stop > start:
                with open(self._spill_dir / f"{bucket:03d}", "ab") as sink:
                    hashes[start:stop].tofile(sink)

    def _bucket_files(self) -> list[Path]:
        assert self._spill_dir is not None
        return sorted(self._spill_dir.iterdir())


def _repeated(hashes: np.ndarray) -> np.ndarray:
    hashes.sort()
    return np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
