"""Publishing a shard's scores without rename: the ledger chooses an attempt's file, ``settle`` copies it
to the shard's output and deletes every attempt file, and ``settle_run`` finishes what a crash left."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from storage.ledger import AttemptUsage, Granted, Ledger, utcnow
from storage.location import Location, parse_location
from storage.shards.publication import attempt_key, settle, settle_run
from testkit.checks import record_run


def test_each_attempt_has_a_key_of_its_own_beside_the_output() -> None:
    assert attempt_key("runs/r1/shard-00003.parquet", 2) == "runs/r1/_attempts/shard-00003.attempt-2.parquet"


@pytest.fixture(params=["local", "memory"])
def data(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "local":
        return parse_location(str(tmp_path / "data"))
    return parse_location(f"memory://publication-{secrets.token_hex(4)}/data")


def _publish(ledger: Ledger, data: Location, run_id: str, shard_id: int, stale: int = 0) -> tuple[str, str]:
    """Attempts 1..stale write files and lose; the next one writes and is chosen. Returns (chosen, output)."""
    leases = ledger.leases(max_attempts=9, lease_s=60)
    output = f"runs/{run_id}/shard-{shard_id:05d}.parquet"
    for attempt in range(1, stale + 1):
        data.join(attempt_key(output, attempt)).write_bytes(b"stale attempt")
    grant = leases.acquire(run_id, shard_id, "w")
    assert isinstance(grant, Granted)
    with ledger.session() as session, session.begin():  # earlier attempts were used up by dead workers
        from storage.ledger.schema import Shard

        shard = session.get(Shard, (run_id, shard_id))
        assert shard is not None
        shard.attempts = grant.attempt + stale
    attempt = grant.attempt + stale
    chosen = attempt_key(output, attempt)
    data.join(chosen).write_bytes(f"scores of attempt {attempt}".encode())
    usage = AttemptUsage(worker="w", model="m:m", device="cpu", pairs=1)
    assert leases.publish(run_id, shard_id, attempt, usage, utcnow(), chosen)
    return chosen, output


def test_settle_leaves_only_the_chosen_scores_at_the_output(tmp_path: Path, data: Location) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    run_id = record_run(ledger, 1)
    chosen, output = _publish(ledger, data, run_id, 0, stale=2)

    settle(data, ledger, run_id, 0, chosen, output)

    assert [found.relative_to(data) for found in data.files()] == [output]
    assert data.join(output).read_bytes() == b"scores of attempt 3"
    [shard] = ledger.shards(run_id)
    assert shard.published_scores == output


def test_settle_run_finishes_a_settle_that_a_crash_interrupted(tmp_path: Path, data: Location) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    run_id = record_run(ledger, 2)
    first_chosen, first_output = _publish(ledger, data, run_id, 0)
    settle(data, ledger, run_id, 0, first_chosen, first_output)
    data.join(attempt_key(first_output, 7)).write_bytes(b"a stale attempt that wrote after the settle")
    _publish(ledger, data, run_id, 1, stale=1)  # its worker died before settling

    assert settle_run(data, ledger, run_id) == 1

    outputs = [shard.output_path for shard in ledger.shards(run_id)]
    assert [found.relative_to(data) for found in data.files()] == outputs
    assert [shard.published_scores for shard in ledger.shards(run_id)] == outputs
    assert data.join(outputs[1]).read_bytes() == b"scores of attempt 2"
    assert settle_run(data, ledger, run_id) == 0


class _WorkerSettlesAfterTheRead(Ledger):
    """A ledger whose next read of the shards is followed, before the reader goes on, by ``settle_next``:
    a worker settling its shard in between (the race ``submit.py --wait`` runs into)."""

    settle_next: object = None

    def shards(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
        snapshot = super().shards(*args, **kwargs)  # type: ignore[arg-type]
        hook, self.settle_next = self.settle_next, None
        if callable(hook):
            hook()
        return snapshot


def test_settle_run_leaves_a_shard_its_worker_settled_meanwhile(tmp_path: Path, data: Location) -> None:
    ledger = _WorkerSettlesAfterTheRead(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    run_id = record_run(ledger, 1)
    chosen, output = _publish(ledger, data, run_id, 0)
    ledger.settle_next = lambda: settle(data, ledger, run_id, 0, chosen, output)

    assert settle_run(data, ledger, run_id) == 0  # the chosen file was gone: its worker had copied it

    assert [found.relative_to(data) for found in data.files()] == [output]
    assert data.join(output).read_bytes() == b"scores of attempt 1"
    assert [shard.published_scores for shard in ledger.shards(run_id)] == [output]


def test_settle_run_sweeps_a_copy_its_killed_worker_left_beside_the_output(
    tmp_path: Path, data: Location
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    run_id = record_run(ledger, 2)
    _, output = _publish(ledger, data, run_id, 0)
    # Killed mid-copy onto its output: the hidden temporary is all the settle wrote.
    stale = data.join(f"runs/{run_id}/.shard-00000.parquet.0123456789ab.tmp")
    stale.write_bytes(b"half a copy")
    other_chosen, other_output = _publish(ledger, data, run_id, 1)
    settle(data, ledger, run_id, 1, other_chosen, other_output)

    assert settle_run(data, ledger, run_id) == 1

    assert sorted(found.relative_to(data) for found in data.files()) == [output, other_output]
    assert data.join(output).read_bytes() == b"scores of attempt 1"
