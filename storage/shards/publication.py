"""A shard's scores, published exactly once on any store, rename or not.

Each attempt writes its scores whole to a key of its own, ``_attempts/shard-00003.attempt-2.parquet``
beside the shard's output ``shard-00003.parquet``. The ledger's fenced publish records that key as the
shard's scores; only the attempt holding the shard's lease succeeds, once. ``settle`` then copies the
chosen file onto the output key (so the run's directory is a readable dataset of one file per shard),
points the ledger at the copy and deletes the shard's attempt files. Whatever step a crash interrupts,
the ledger names a complete file: readers and the merge go by the ledger (``Shard.published_scores``),
never by listing, and ``settle_run`` finishes an interrupted settle (and sweeps what it left).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from core.errors import StorageError
from storage.atomic import copy_atomically
from storage.ledger import Ledger, ShardStatus
from storage.location import Location

ATTEMPTS_DIRNAME = "_attempts"


def attempt_key(output_path: str, attempt: int) -> str:
    """The key attempt ``attempt`` writes its scores to, relative to the data dir."""
    output = PurePosixPath(output_path)
    return str(output.parent / ATTEMPTS_DIRNAME / f"{output.stem}.attempt-{attempt}{output.suffix}")


def settle(data: Location, ledger: Ledger, run_id: str, shard_id: int, chosen: str, output_path: str) -> None:
    """Copy the chosen scores onto ``output_path``, point the ledger there, delete the attempt files."""
    _copy_chosen(data, ledger, run_id, shard_id, chosen, output_path)
    remove_attempts(data, [output_path])


def remove_attempts(data: Location, output_paths: Sequence[str]) -> int:
    """Delete every attempt file (stale ones, and temporaries of killed writers) of these shards of one
    run, in one listing of the run's attempts directory. Returns how many it deleted."""
    if not output_paths:
        return 0
    attempts = data.join(str(PurePosixPath(output_paths[0]).parent / ATTEMPTS_DIRNAME))
    stems = tuple(f"{PurePosixPath(output_path).stem}.attempt-" for output_path in output_paths)
    removed = 0
    for found in attempts.files(recursive=False):
        if found.name.lstrip(".").startswith(stems) and found.delete():
            removed += 1
    return removed


def settle_run(data: Location, ledger: Ledger, run_id: str) -> int:
    """Settle every done shard of a run that a crash left unsettled, and delete attempt files that stale
    attempts wrote after their shard was settled. Returns how many shards it settled."""
    done = ledger.shards(run_id, statuses=[ShardStatus.DONE])
    settled = 0
    for shard in done:
        if shard.scores_path is not None and shard.scores_path != shard.output_path:
            try:
                _copy_chosen(data, ledger, run_id, shard.shard_id, shard.scores_path, shard.output_path)
            except StorageError:
                # Its worker may have settled it since the ledger was read, deleting the file we copy.
                if _scores_path(ledger, run_id, shard.shard_id) == shard.output_path:
                    continue
                raise
            settled += 1
    outputs = [shard.output_path for shard in done]
    remove_attempts(data, outputs)
    remove_copy_temporaries(data, outputs)
    return settled


def remove_copy_temporaries(data: Location, output_paths: Sequence[str]) -> int:
    """Delete the hidden temporaries beside these settled outputs of one run that a copy onto them left
    when its writer was killed mid-copy, in one listing of the run's directory. A copy still running
    when its temporary goes fails, which both its callers (a worker's settle, ``settle_run``) take: the
    output is already whole. Returns how many it deleted."""
    if not output_paths:
        return 0
    run_dir = data.join(str(PurePosixPath(output_paths[0]).parent))
    prefixes = tuple(f".{PurePosixPath(output_path).name}." for output_path in output_paths)
    removed = 0
    for found in run_dir.files(recursive=False):
        if found.name.startswith(prefixes) and found.name.endswith(".tmp") and found.delete():
            removed += 1
    return removed


def _scores_path(ledger: Ledger, run_id: str, shard_id: int) -> str | None:
    return next(shard.scores_path for shard in ledger.shards(run_id) if shard.shard_id == shard_id)


def _copy_chosen(
    data: Location, ledger: Ledger, run_id: str, shard_id: int, chosen: str, output_path: str
) -> None:
    if chosen != output_path:
        copy_atomically(data.join(chosen), data.join(output_path))
        ledger.moved_scores(run_id, shard_id, chosen, output_path)
