"""Where a shard attempt's wall time goes, phase by phase (lease, read, score, write, ledger, settle), so
that the per-shard fixed cost of the worker machinery can be read from its log and benchmarked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# The line a worker logs per shard; ``benchmarks/pipeline.py`` parses it.
PHASES_PREFIX = "shard phases ms:"


class PhaseClock:
    """Milliseconds spent per named phase; a phase entered twice adds up."""

    def __init__(self) -> None:
        self.milliseconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.milliseconds[name] = self.milliseconds.get(name, 0.0) + elapsed

    def line(self) -> str:
        """``PHASES_PREFIX`` followed by ``name=ms`` for each phase, in the order they were first entered."""
        return " ".join([PHASES_PREFIX, *(f"{name}={ms:.2f}" for name, ms in self.milliseconds.items())])


def parse_phases(line: str) -> dict[str, float] | None:
    """The phases of a line written by ``PhaseClock.line`` (anywhere in ``line``), else None."""
    _, found, rest = line.partition(PHASES_PREFIX)
    if not found:
        return None
    phases: dict[str, float] = {}
    for field in rest.split():
        name, _, value = field.partition("=")
        try:
            phases[name] = float(value)
        except ValueError:
            return None
    return phases
