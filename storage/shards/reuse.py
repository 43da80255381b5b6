"""Scores carried over from an earlier run: a sorted index of its content hashes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import RerankError
from storage.location import Location
from storage.shards.scores import read_schema, read_scores

_COLUMNS = ("content_hash", "score", "tokens", "truncated")


@dataclass(frozen=True)
class Carried:
    """What an earlier run recorded for each looked-up pair: whether it scored it, the score (NaN where
    not), and the pair's provenance, -1 where the earlier output did not record it."""

    found: np.ndarray  # bool
    scores: np.ndarray  # float32
    tokens: np.ndarray  # int64, -1: unknown
    truncated: np.ndarray  # int8: 1 truncated, 0 not, -1 unknown

    @classmethod
    def nothing(cls, n_pairs: int) -> Carried:
        """No earlier score for any of ``n_pairs`` pairs."""
        return cls(
            np.zeros(n_pairs, dtype=bool),
            np.full(n_pairs, np.nan, dtype=np.float32),
            np.full(n_pairs, -1, dtype=np.int64),
            np.full(n_pairs, -1, dtype=np.int8),
        )


class PreviousScores:
    """The (content hash -> score, tokens, truncated) rows of an earlier run's output, held as sorted
    numpy arrays (17 bytes a pair) so that millions of lookups take one vectorised search."""

    def __init__(
        self,
        hashes: np.ndarray,
        scores: np.ndarray,
        tokens: np.ndarray | None = None,
        truncated: np.ndarray | None = None,
    ) -> None:
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._scores = scores[order]
        self._tokens = (np.full(len(hashes), -1, dtype=np.int64) if tokens is None else tokens)[order]
        self._truncated = (np.full(len(hashes), -1, dtype=np.int8) if truncated is None else truncated)[order]

    @classmethod
    def from_files(cls, score_files: Sequence[Location]) -> PreviousScores:
        """The scores of an earlier run, from its shards' published score files."""
        if not score_files:
            raise RerankError("the run to reuse has no score files")
        hashes, scores, tokens, truncated = [], [], [], []
        for location in score_files:
            # Outputs written before provenance existed have no tokens and truncated columns.
            present = read_schema(location).names
            table = read_scores(location, columns=[name for name in _COLUMNS if name in present])
            hashes.append(table.column("content_hash").to_numpy())
            scores.append(table.column("score").to_numpy())
            tokens.append(_or_unknown(table, "tokens", pa.int64()).astype(np.int64))
            truncated.append(_or_unknown(table, "truncated", pa.int8()).astype(np.int8))
        return cls(
            np.concatenate(hashes).astype(np.uint64),
            np.concatenate(scores).astype(np.float32),
            np.concatenate(tokens),
            np.concatenate(truncated),
        )

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, hashes: np.ndarray) -> Carried:
        """For each hash: whether an earlier score exists, and what the earlier run recorded."""
        if not len(self._hashes):
            return Carried.nothing(len(hashes))
        positions = np.searchsorted(self._hashes, hashes)
        clipped = np.minimum(positions, len(self._hashes) - 1)
        found = self._hashes[clipped] == hashes
        return Carried(
            found,
            np.where(found, self._scores[clipped], np.nan).astype(np.float32),
            np.where(found, self._tokens[clipped], -1),
            np.where(found, self._truncated[clipped], -1).astype(np.int8),
        )


def _or_unknown(table: pa.Table, name: str, kind: pa.DataType) -> np.ndarray:
    """Column ``name`` as ``kind`` with -1 for nulls; all -1 when an older output has no such column."""
    if name not in table.column_names:
        return np.full(table.num_rows, -1)
    return pc.fill_null(table.column(name).cast(kind), -1).to_numpy()
