"""Per-pair annotations of a shard input: the pair's content hash and, for an incremental run, the score
carried over from an earlier run (null where the pair must be scored).

The producer adds them as it writes each shard input (``inputs.write_shard_inputs``), so every file is
written once; the worker scores only the rows without a carried-over score and merges the two."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from storage.shards.content_hash import pair_hashes
from storage.shards.reuse import PreviousScores

CONTENT_HASH = "content_hash"
REUSED_SCORE = "reused_score"


@dataclass(frozen=True)
class PairAnnotations:
    """How to annotate the pairs of one run: its scoring fingerprint (``content_hash.scoring_fingerprint``)
    and, for an incremental run, the earlier run's scores."""

    fingerprint: str
    previous: PreviousScores | None = None

    @staticmethod
    def schema(pairs: pa.Schema) -> pa.Schema:
        """The schema of annotated pairs: the canonical pair columns, then the annotations."""
        return pairs.append(pa.field(CONTENT_HASH, pa.uint64())).append(pa.field(REUSED_SCORE, pa.float32()))

    def annotate(self, pairs: pa.Table) -> tuple[pa.Table, int]:
        """``pairs`` with their annotation columns, and how many of them carry a reused score."""
        hashes = pair_hashes(self.fingerprint, pairs.column("query"), pairs.column("text"))
        if self.previous is None:
            found, scores = np.zeros(hashes.size, dtype=bool), np.zeros(hashes.size, dtype=np.float32)
        else:
            found, scores = self.previous.lookup(hashes)
        annotated = pairs.append_column(CONTENT_HASH, pa.array(hashes, pa.uint64())).append_column(
            REUSED_SCORE, pa.array(scores, pa.float32(), mask=~found)
        )
        return annotated, int(found.sum())


def scores_to_compute(pairs: pa.Table) -> np.ndarray:
    """Row indices of a shard input that need the model (all rows when nothing is carried over)."""
    if REUSED_SCORE not in pairs.column_names:
        return np.arange(pairs.num_rows)
    return np.flatnonzero(pairs.column(REUSED_SCORE).is_null().to_numpy(zero_copy_only=False))


def merge_reused(pairs: pa.Table, computed_rows: np.ndarray, computed: np.ndarray) -> np.ndarray:
    """All scores of the shard in row order: carried-over ones plus the freshly computed ones."""
    if REUSED_SCORE in pairs.column_names:
        scores = pairs.column(REUSED_SCORE).to_numpy(zero_copy_only=False).astype(np.float32)
    else:
        scores = np.empty(pairs.num_rows, dtype=np.float32)
    scores[computed_rows] = computed
    return scores
