"""Per-pair annotations of a shard input: the pair's content hash and, for an incremental run, the score
carried over from an earlier run (null where the pair must be scored).

The producer adds them as it writes each shard input (``inputs.write_shard_inputs``), so every file is
written once; the worker scores only the rows without a carried-over score and merges the two."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.shards.content_hash import pair_hashes
from storage.shards.reuse import Carried, PreviousScores

CONTENT_HASH = "content_hash"
REUSED_SCORE = "reused_score"
# The carried-over score's provenance (null where the earlier output did not record it).
REUSED_TOKENS = "reused_tokens"
REUSED_TRUNCATED = "reused_truncated"


@dataclass(frozen=True)
class PairAnnotations:
    """How to annotate the pairs of one run: its scoring fingerprint (``content_hash.scoring_fingerprint``)
    and, for an incremental run, the earlier run's scores."""

    fingerprint: str
    previous: PreviousScores | None = None

    @staticmethod
    def schema(pairs: pa.Schema) -> pa.Schema:
        """The schema of annotated pairs: the canonical pair columns, then the annotations."""
        annotations = [
            pa.field(CONTENT_HASH, pa.uint64()),
            pa.field(REUSED_SCORE, pa.float32()),
            pa.field(REUSED_TOKENS, pa.int32()),
            pa.field(REUSED_TRUNCATED, pa.bool_()),
        ]
        for field in annotations:
            pairs = pairs.append(field)
        return pairs

    def annotate(self, pairs: pa.Table) -> tuple[pa.Table, int]:
        """``pairs`` with their annotation columns, and how many of them carry a reused score."""
        hashes = pair_hashes(self.fingerprint, pairs.column("query"), pairs.column("text"))
        carried = Carried.nothing(hashes.size) if self.previous is None else self.previous.lookup(hashes)
        annotated = (
            pairs.append_column(CONTENT_HASH, pa.array(hashes, pa.uint64()))
            .append_column(REUSED_SCORE, pa.array(carried.scores, pa.float32(), mask=~carried.found))
            .append_column(REUSED_TOKENS, pa.array(carried.tokens, pa.int32(), mask=carried.tokens < 0))
            .append_column(
                REUSED_TRUNCATED, pa.array(carried.truncated == 1, pa.bool_(), mask=carried.truncated < 0)
            )
        )
        return annotated, int(carried.found.sum())


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


def merge_carried(
    pairs: pa.Table, carried: str, computed_rows: np.ndarray, computed: np.ndarray | None, kind: pa.DataType
) -> pa.Array:
    """A per-pair provenance value (``kind``) for every row of the shard: carried over from column
    ``carried`` where the score was, computed elsewhere; null where it is not known."""
    values = np.zeros(pairs.num_rows, dtype=kind.to_pandas_dtype())
    known = np.zeros(pairs.num_rows, dtype=bool)
    if carried in pairs.column_names:
        column = pairs.column(carried)
        known = column.is_valid().to_numpy(zero_copy_only=False)
        values = (
            pc.fill_null(column, pa.scalar(values.dtype.type(0), kind)).to_numpy(zero_copy_only=False).copy()
        )
    if computed is not None:
        values[computed_rows] = computed
        known[computed_rows] = True
    return pa.array(values, kind, mask=~known)
