"""How many pairs a new run's shards hold: what the user asked for, else a fixed amount of device time.

A shard's fixed cost in the worker (lease, read, write, ledger, ack: about 10-20 ms) and its share of a
retry are the same whatever the device, while a GPU scores a hundred times more pairs per second than a
CPU, so a size in pairs that suits one suits neither. Sized in device-seconds at the speed the ledger
measured on the model's latest successful attempts (pairs over the seconds its devices were busy), a
shard keeps both costs small on every device. A model the ledger has not seen (and an API model, whose
attempts time no device) gets ``RERANK_SHARD_PAIRS``' default.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from storage.ledger import Ledger

MIN_SHARD_PAIRS = 100
MAX_SHARD_PAIRS = 200_000


@dataclass(frozen=True)
class ShardSize:
    pairs: int
    reason: str  # for the run's summary line


def shard_size(settings: Settings, ledger: Ledger, model: str, requested: int | None) -> ShardSize:
    """Pairs per shard for a new run of ``model``: ``requested`` (--shard-pairs), else RERANK_SHARD_PAIRS
    when set, else ``settings.shard_device_seconds`` at the model's measured speed, else the default."""
    if requested is not None:
        return ShardSize(requested, "--shard-pairs")
    if "shard_pairs" in settings.model_fields_set:
        return ShardSize(settings.shard_pairs, "RERANK_SHARD_PAIRS")
    speed = ledger.measured_speed(model)
    if speed is None:
        return ShardSize(settings.shard_pairs, "the default: the ledger has not measured this model yet")
    seconds = settings.shard_device_seconds
    pairs = round(speed.pairs_per_second * seconds)
    pairs = min(MAX_SHARD_PAIRS, max(MIN_SHARD_PAIRS, pairs))
    return ShardSize(
        pairs,
        f"{seconds:g} device-seconds at {speed.pairs_per_second:,.0f} pairs/s, measured over this model's "
        f"last {speed.attempts} attempt(s)",
    )
