"""A worker process's wall time, each instant charged to one shard attempt only.

A local worker holds a few shards at once (``RERANK_SHARDS_IN_FLIGHT``): one is scored on the device
while the next is read and the last is written and published. Their attempts overlap in time, so
charging each its own start-to-end time would bill the device twice for the same seconds. ``HeldTime``
charges an attempt only the part of its span no other attempt of this process has been charged for, so
the attempts' wall seconds add up to the time the process held the device for them, busy or not.
"""

from __future__ import annotations

import threading

# Charged spans that ended this long before the newest one are forgotten: no attempt lasts that long.
FORGET_AFTER_S = 7 * 24 * 3600.0


class HeldTime:
    """The union of the spans charged so far (``time.monotonic()`` seconds), kept merged and sorted."""

    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def charge(self, start: float, end: float) -> float:
        """Seconds of [``start``, ``end``] not charged before, which are charged now."""
        if end <= start:
            return 0.0
        with self._lock:
            covered = sum(max(0.0, min(end, stop) - max(start, begin)) for begin, stop in self._spans)
            merged_start, merged_end = start, end
            kept: list[tuple[float, float]] = []
            for begin, stop in self._spans:
                if stop < merged_start or begin > merged_end:
                    kept.append((begin, stop))
                else:
                    merged_start, merged_end = min(merged_start, begin), max(merged_end, stop)
            kept.append((merged_start, merged_end))
            newest = max(stop for _, stop in kept)
            self._spans = sorted(span for span in kept if span[1] >= newest - FORGET_AFTER_S)
            return (end - start) - covered
