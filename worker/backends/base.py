"""The interface every reranker backend implements, local model or hosted API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.model_spec import ModelSpec
from core.usage import RequestUsage

# The ``device`` an API reranker's ``describe()`` reports (and the ledger records for its attempts).
API_DEVICE = "api"


@dataclass(frozen=True)
class ScoreResult:
    """Scores for a list of pairs, in the order given, plus what the scoring used."""

    scores: np.ndarray  # float32, one per pair, same order as the input
    tokens: int  # tokens fed to the model (after truncation, without padding)
    device_seconds: float  # time spent in model forward passes
    # API backends: one record per HTTP request attempt, failed ones included (the ledger's request rows).
    requests: tuple[RequestUsage, ...] = ()
    # Per pair, where the backend knows them: the tokens the model read (after truncation, special
    # tokens included; a bi-encoder's query and text together) and whether the text was cut to fit.
    pair_tokens: np.ndarray | None = None  # int64
    truncated: np.ndarray | None = None  # bool


class Reranker(Protocol):
    """Scores (query, text) pairs. Loaded once per worker process and reused for every shard."""

    spec: ModelSpec

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        """Score pair i = (queries[i], texts[i]); never drops or reorders a pair."""
        ...

    def describe(self) -> dict[str, str]:
        """Model and settings that produced the scores, stored in the output's Parquet metadata."""
        ...
