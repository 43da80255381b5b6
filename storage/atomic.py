"""Writes that readers never see half done, on a local disk and on object stores alike.

A file is written in full under a hidden temporary name beside its target (a dot first, so dataset readers
such as pyarrow, DuckDB globs and pandas skip it), then published: on a local disk renamed onto the target
(atomic on POSIX); on an object store, which has no rename, copied onto it (an object appears whole or not
at all) and the temporary deleted. A writer killed mid-write leaves only a hidden temporary, which
``remove_stale_temporaries`` deletes."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from storage.location import Location, guarded


class StagedFile:
    """A file written in full under a temporary name, published later with ``publish()``."""

    def __init__(self, target: Location) -> None:
        self.target = target
        self.temporary = target.parent.join(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")

    def seal(self) -> None:
        """Flush the written temporary file to disk (object stores hold it once it is closed)."""
        if self.target.is_local:
            with open(self.temporary.path, "rb") as handle:
                os.fsync(handle.fileno())

    def publish(self) -> None:
        """Put the temporary file's content at the target, whole, and remove the temporary."""
        if self.target.is_local:
            os.replace(self.temporary.path, self.target.path)
            _fsync_dir(self.target.parent.path)
            return
        filesystem = self.target.filesystem
        guarded(lambda: filesystem.copy_file(self.temporary.path, self.target.path), self.target)
        self.temporary.delete()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temporary.delete()


def remove_stale_temporaries(target: Location) -> int:
    """Delete temporary files that writers killed mid-write left beside ``target``. Call it only when
    no live writer can remain (the target was just published, or its shard failed for good)."""
    removed = 0
    for temporary in target.parent.files(prefix=f".{target.name}.", recursive=False):
        if temporary.name.endswith(".tmp") and temporary.delete():
            removed += 1
    return removed


@contextlib.contextmanager
def staged(target: Location) -> Iterator[StagedFile]:
    """Yield a ``StagedFile`` to write; it is removed unless the caller published it."""
    target.parent.make_dir()
    staged_file = StagedFile(target)
    try:
        yield staged_file
    finally:
        staged_file.discard()


@contextlib.contextmanager
def atomic_write(target: Location) -> Iterator[Location]:
    """Yield a temporary location to write; on success it is published at ``target``, on failure removed."""
    with staged(target) as staged_file:
        yield staged_file.temporary
        staged_file.seal()
        staged_file.publish()


def copy_atomically(source: Location, target: Location) -> None:
    """Copy ``source`` onto ``target`` (same filesystem) so that readers see the old target or the whole
    copy, never part of it."""
    if not target.is_local:
        guarded(lambda: target.filesystem.copy_file(source.path, target.path), target)
        return
    with atomic_write(target) as temporary:
        guarded(lambda: temporary.filesystem.copy_file(source.path, temporary.path), target)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
