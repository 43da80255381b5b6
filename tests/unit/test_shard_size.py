"""A new run's shard size: the flag, RERANK_SHARD_PAIRS, else device-seconds at the model's measured speed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from core.settings import Settings
from producer.shard_size import MAX_SHARD_PAIRS, MIN_SHARD_PAIRS, shard_size
from storage.ledger import AttemptUsage, Granted, Ledger, utcnow
from testkit.checks import record_run

MODEL = "cross-encoder:measured"


def scored(ledger: Ledger, model: str, attempts: list[tuple[int, float]], **usage: Any) -> None:
    """A run of ``model`` whose shards each published one attempt of (pairs, device seconds), in order."""
    run_id = record_run(ledger, len(attempts), model=model)
    leases = ledger.leases(max_attempts=3, lease_s=60)
    started = utcnow() - timedelta(hours=1)
    for shard_id, (pairs, seconds) in enumerate(attempts):
        grant = leases.acquire(run_id, shard_id, "w")
        assert isinstance(grant, Granted)
        values = {"pairs": pairs, "device_seconds": seconds, "wall_seconds": seconds + 0.1} | usage
        attempt_usage = AttemptUsage(worker="w", model=model, device="cpu", **values)
        assert leases.publish(run_id, shard_id, grant.attempt, attempt_usage, started, f"s{shard_id}")


@pytest.fixture
def ledger(fresh_ledger_url: str) -> Ledger:
    ledger = Ledger(fresh_ledger_url)
    ledger.create_schema()
    return ledger


def test_shards_hold_device_seconds_at_the_speed_the_ledger_measured(ledger: Ledger) -> None:
    settings = Settings(shard_device_seconds=30)
    assert shard_size(settings, ledger, MODEL, None).pairs == 2000  # nothing measured yet: the default

    scored(ledger, MODEL, [(3000, 10.0), (1000, 10.0)])  # 200 pairs per device-second over both
    scored(ledger, "cross-encoder:other", [(10, 10.0)])

    size = shard_size(settings, ledger, MODEL, None)
    assert size.pairs == 6000
    assert size.reason == "30 device-seconds at 200 pairs/s, measured over this model's last 2 attempt(s)"
    # What the user sets wins.
    assert shard_size(settings, ledger, MODEL, 700).pairs == 700
    assert shard_size(Settings(shard_pairs=900), ledger, MODEL, None).pairs == 900


def test_sizes_stay_within_bounds_and_untimed_attempts_do_not_count(ledger: Ledger) -> None:
    scored(ledger, "null:fast", [(2000, 1e-6)])
    scored(ledger, "cross-encoder:slow", [(1, 100.0)])
    scored(ledger, "api:untimed", [(2000, 0.0)])  # API attempts time no device

    assert shard_size(Settings(), ledger, "null:fast", None).pairs == MAX_SHARD_PAIRS
    assert shard_size(Settings(), ledger, "cross-encoder:slow", None).pairs == MIN_SHARD_PAIRS
    assert shard_size(Settings(), ledger, "api:untimed", None).pairs == 2000
