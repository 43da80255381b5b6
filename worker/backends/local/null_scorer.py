"""A scorer with no model: the worker machinery's own ceiling, measured without a GPU.

A pair's score is a hash of its query and text, so it is cheap, deterministic and different for different
pairs, and the "tokens" are the pair's UTF-8 bytes over four. Everything around the scoring (reading the
shard, writing scores, the ledger, Redis, acknowledging) runs as for a real model, so
``scripts/bench_machinery.py`` shows how many pairs per second a worker process can be fed, which is what
a GPU scoring tens of thousands of pairs per second needs. ``--model null:<any name>``.

``null:<name>?pairs_per_s=R`` stands in for a device that scores R pairs per second: each call holds a
simulated device (one per process, so calls take turns on it as on a GPU) for pairs / R seconds, waiting
without the interpreter lock as the host waits for kernels, and reports that time as device seconds. So
the benchmark shows how much of the machinery's per-shard work overlaps the device's (shards in flight)
and what share of the worker's wall time the device is busy.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence

import numpy as np

from core.errors import ModelSpecError
from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.base import ScoreResult

BYTES_PER_TOKEN = 4


# The simulated device of this process: one call at a time holds it.
_DEVICE = threading.Lock()


class NullReranker:
    """Scores every pair at once from a CRC-32 of its text; no weights, and no device unless it
    simulates one scoring ``pairs_per_s``."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.pairs_per_s = spec.float_option("pairs_per_s")
        if self.pairs_per_s is not None and self.pairs_per_s <= 0:
            raise ModelSpecError(f"--model {spec}: option pairs_per_s must be a positive number")

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        encoded = [f"{query}\x1f{text}".encode() for query, text in zip(queries, texts, strict=True)]
        hashes = np.fromiter((zlib.crc32(pair) for pair in encoded), dtype=np.float64, count=len(encoded))
        tokens = sum(map(len, encoded)) // BYTES_PER_TOKEN
        device_seconds = 0.0
        if self.pairs_per_s is not None:
            with _DEVICE:
                device_seconds = len(encoded) / self.pairs_per_s
                time.sleep(device_seconds)
        scores = (hashes / 2**32).astype(np.float32)
        return ScoreResult(scores=scores, tokens=tokens, device_seconds=device_seconds)

    def describe(self) -> dict[str, str]:
        return {
            "kind": self.spec.kind,
            "name": self.spec.name,
            "device": "cpu",
            "dtype": "none",
            "activation": "CRC-32 of the pair over 2**32 (no model)",
        }


def load_null(spec: ModelSpec, settings: Settings) -> NullReranker:
    return NullReranker(spec)
