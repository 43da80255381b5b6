"""Per-pair annotations the producer adds to each shard input: the pair's content hash and, for an
incremental run, the score carried over from an earlier run (null where the pair must be scored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.shards.content_hash import pair_hashes
from storage.shards.inputs import read_shard_input
from storage.shards.reuse import PreviousScores

CONTENT_HASH = "content_hash"
REUSED_SCORE = "reused_score"


def annotate_shard_input(path: Path, fingerprint: str, previous: PreviousScores | None) -> int:
    """Rewrite the shard input at ``path`` with its annotations; returns how many pairs were reused."""
    pairs = read_shard_input(path)
    hashes = pair_hashes(fingerprint, pairs.column("query").to_pylist(), pairs.column("text").to_pylist())
    if previous is None:
        found, scores = np.zeros(len(hashes), dtype=bool), np.zeros(len(hashes), dtype=np.float32)
    else:
        found, scores = previous.lookup(hashes)
    annotated = pairs.append_column(CONTENT_HASH, pa.array(hashes, pa.uint64())).append_column(
        REUSED_SCORE, pa.array(scores, pa.float32(), mask=~found)
    )
    pq.write_table(annotated, path)
    return int(found.sum())


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
