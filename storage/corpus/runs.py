"""Runs of consecutive pairs of one query: most corpora list a query's candidates together, so work done
per query (hashing its id, grouping its text) is done once per run instead of once per pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class QueryRuns:
    """The runs of one batch of canonical pairs: where each starts and how many pairs it has."""

    starts: np.ndarray
    lengths: np.ndarray

    def heads(self, column: pa.Array) -> pa.Array:
        """The value of ``column`` at the first pair of each run."""
        return column.take(pa.array(self.starts))

    def per_pair(self, values: np.ndarray) -> np.ndarray:
        """One value per run spread to every pair of the run."""
        return np.repeat(values, self.lengths)


def query_runs(pairs: pa.RecordBatch) -> QueryRuns:
    """Runs of consecutive pairs with equal ``query_id`` and equal ``query`` (a null ends a run)."""
    n_pairs = pairs.num_rows
    if n_pairs == 0:
        return QueryRuns(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    changed = np.zeros(n_pairs, dtype=bool)
    changed[0] = True
    for name in ("query_id", "query"):
        column = pairs.column(name)
        differs = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, n_pairs - 1)), True)
        changed[1:] |= differs.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(changed)
    return QueryRuns(starts, np.diff(np.append(starts, n_pairs)))
