"""Scores carried over from an earlier run: a sorted index of its content hashes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import RerankError
from storage.location import Location
from storage.shards.scores import read_scores


class PreviousScores:
    """The (content hash -> score) pairs of an earlier run's output, held as two sorted numpy arrays
    (12 bytes a pair) so that millions of lookups take one vectorised search."""

    def __init__(self, hashes: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._scores = scores[order]

    @classmethod
    def from_files(cls, score_files: Sequence[Location]) -> PreviousScores:
        """The scores of an earlier run, from its shards' published score files."""
        if not score_files:
            raise RerankError("the run to reuse has no score files")
        hashes, scores = [], []
        for location in score_files:
            table = read_scores(location, columns=["content_hash", "score"])
            hashes.append(table.column("content_hash").to_numpy())
            scores.append(table.column("score").to_numpy())
        return cls(np.concatenate(hashes).astype(np.uint64), np.concatenate(scores).astype(np.float32))

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each hash: whether an earlier score exists, and that score (NaN where none)."""
        if not len(self._hashes):
            return np.zeros(len(hashes), dtype=bool), np.full(len(hashes), np.nan, dtype=np.float32)
        positions = np.searchsorted(self._hashes, hashes)
        clipped = np.minimum(positions, len(self._hashes) - 1)
        found = self._hashes[clipped] == hashes
        return found, np.where(found, self._scores[clipped], np.nan).astype(np.float32)
