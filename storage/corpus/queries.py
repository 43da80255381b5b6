"""Per-query bookkeeping of a corpus scan, kept as numpy arrays rather than Python objects.

Each scanned batch adds one record per distinct (query_id, query text) in it: the query key, a
second check key, a hash of the text, the position of its first pair and its pair count. Batches come
cut into runs of consecutive pairs of one query (``runs``), so the grouping sees a row per run. Records
are folded into one per query key whenever enough have piled up, so memory is about 40 bytes per
query (plus at most as many again of unfolded records), however the queries are interleaved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from storage.corpus.keys import hash_strings, id_check_keys, id_keys
from storage.corpus.runs import QueryRuns

_FOLD_AFTER_RECORDS = 1 << 18


@dataclass(frozen=True, eq=False)
class FoldedQueries:
    """Queries in order of first appearance, and the keys seen with more than one text hash."""

    keys: np.ndarray
    pair_counts: np.ndarray
    conflicted_keys: np.ndarray
    key_collision: bool


_COLUMNS = ("keys", "checks", "texts", "firsts", "counts")


class QueryRecords:
    """Records of the batches scanned so far: ``add`` each batch of canonical pairs, then ``fold``."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        # One list of arrays per column; after a fold each list holds one array, sorted by key.
        self._columns: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS}
        self._unfolded = 0
        self._folded_size = 0
        self._conflicted_keys = np.empty(0, dtype=np.uint64)
        self._key_collision = False

    def add(self, pairs: pa.RecordBatch, runs: QueryRuns, first_position: int) -> None:
        """Record the queries of pairs, cut into runs, whose first pair has the corpus position
        first_position."""
        table = pa.Table.from_arrays(
            [
                runs.heads(pairs.column("query_id")),
                runs.heads(pairs.column("query")),
                pa.array(first_position + runs.starts),
                pa.array(runs.lengths),
            ],
            names=["query_id", "query", "first", "pairs"],
        )
        grouped = table.group_by(["query_id", "query"], use_threads=False).aggregate(
            [("first", "min"), ("pairs", "sum")]
        )
        query_ids = grouped.column("query_id")
        new_columns = {
            "keys": id_keys(query_ids, self._seed),
            "checks": id_check_keys(query_ids, self._seed),
            "texts": hash_strings(grouped.column("query"), self._seed),
            "firsts": grouped.column("first_min").to_numpy(),
            "counts": grouped.column("pairs_sum").to_numpy(),
        }
        for name, values in new_columns.items():
            self._columns[name].append(values)
        self._unfolded += grouped.num_rows
        if self._unfolded >= max(_FOLD_AFTER_RECORDS, self._folded_size):
            self._fold_columns()

    def fold(self) -> FoldedQueries:
        """One row per query key, in order of first appearance."""
        self._fold_columns()
        if not self._columns["keys"]:
            empty = np.empty(0, dtype=np.uint64)
            return FoldedQueries(empty, np.empty(0, dtype=np.int64), empty, key_collision=False)
        keys, firsts, counts = (self._columns[name][0] for name in ("keys", "firsts", "counts"))
        self._columns = {name: [] for name in _COLUMNS}
        by_appearance = np.argsort(firsts, kind="stable")
        return FoldedQueries(
            keys[by_appearance],
            counts[by_appearance].astype(np.int64),
            self._conflicted_keys,
            self._key_collision,
        )

    def _fold_columns(self) -> None:
        """Replace the records by one per key: earliest position, summed counts, one text hash.

        Columns are concatenated, sorted and reduced one at a time, so that only one column is
        ever copied at once.
        """
        if self._unfolded == 0:
            return
        keys = self._concatenated("keys")
        # The previous fold's output leads, already sorted by key: a stable sort (timsort for
        # 64-bit keys) merges that run with the new records cheaply.
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        group_starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        group_sizes = np.diff(np.r_[group_starts, keys.size])

        texts = self._concatenated("texts")[order]
        first_texts = texts[group_starts]
        self._conflicted_keys = np.union1d(
            self._conflicted_keys, keys[texts != np.repeat(first_texts, group_sizes)]
        )
        del texts
        checks = self._concatenated("checks")[order]
        first_checks = checks[group_starts]
        self._key_collision |= bool(np.any(checks != np.repeat(first_checks, group_sizes)))
        del checks
        folded = {
            "keys": keys[group_starts],
            "checks": first_checks,
            "texts": first_texts,
            "firsts": np.minimum.reduceat(self._concatenated("firsts")[order], group_starts),
            "counts": np.add.reduceat(self._concatenated("counts")[order], group_starts),
        }
        self._columns = {name: [values] for name, values in folded.items()}
        self._folded_size = group_starts.size
        self._unfolded = 0

    def _concatenated(self, name: str) -> np.ndarray:
        """One column's records as a single array; the parts are released."""
        parts = self._columns[name]
        self._columns[name] = []
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
