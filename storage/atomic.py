"""Atomic file publication: write a hidden temporary file beside the target, then rename it.

The temporary name starts with a dot so that dataset readers (pyarrow, DuckDB globs, pandas) skip it,
and readers never see a partial file."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


class StagedFile:
    """A file written in full under a temporary name, published later with ``publish()``."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"

    def seal(self) -> None:
        """Flush the written temporary file to disk."""
        with open(self.temporary, "rb") as handle:
            os.fsync(handle.fileno())

    def publish(self) -> None:
        """Rename the temporary file onto the target (atomic on POSIX) and persist the rename."""
        os.replace(self.temporary, self.target)
        _fsync_dir(self.target.parent)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def remove_stale_temporaries(target: Path) -> int:
    """Delete temporary files that attempts killed mid-write left beside ``target``. Call it only when
    no live writer can remain (the target was just published, or its shard failed for good)."""
    removed = 0
    for temporary in target.parent.glob(f".{target.name}.*.tmp"):
        temporary.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def staged(target: Path) -> Iterator[StagedFile]:
    """Yield a ``StagedFile`` to write; it is removed unless the caller published it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged_file = StagedFile(target)
    try:
        yield staged_file
    finally:
        staged_file.discard()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed onto ``target``, on failure removed."""
    with staged(target) as staged_file:
        yield staged_file.temporary
        staged_file.seal()
        staged_file.publish()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
