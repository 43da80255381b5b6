"""A scorer with no model: the worker machinery's own ceiling, measured without a GPU.

A pair's score is a hash of its query and text, so it is cheap, deterministic and different for different
pairs, and the "tokens" are the pair's UTF-8 bytes over four. Everything around the scoring (reading the
shard, writing scores, the ledger, Redis, acknowledging) runs as for a real model, so
``scripts/bench_machinery.py`` shows how many pairs per second a worker process can be fed, which is what
a GPU scoring tens of thousands of pairs per second needs. ``--model null:<any name>``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from core.model_spec import ModelSpec
from core.settings import Settings
from worker.backends.base import ScoreResult

BYTES_PER_TOKEN = 4


class NullReranker:
    """Scores every pair at once from a CRC-32 of its text; no device, no weights."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        encoded = [f"{query}\x1f{text}".encode() for query, text in zip(queries, texts, strict=True)]
        hashes = np.fromiter((zlib.crc32(pair) for pair in encoded), dtype=np.float64, count=len(encoded))
        tokens = sum(map(len, encoded)) // BYTES_PER_TOKEN
        return ScoreResult(scores=(hashes / 2**32).astype(np.float32), tokens=tokens, device_seconds=0.0)

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
