"""``validate_corpus``: one streaming pass over the corpus, a second one only to confirm hash hits.

Memory stays small and independent of text sizes:

- row checks (nulls, blank texts) count per batch and keep only a count and a first row;
- duplicate (query_id, doc_id) pairs: a 64-bit hash per pair is kept, spilled in buckets to a local
  temporary directory beyond a small budget (``pair_hashes``), and the repeated ones found one bucket
  at a time; only hashes seen twice are looked up again, exactly, in a second pass
  (``confirmation``);
- one query_id with two texts: per query and batch, a hash of the text (``queries``);
  query_ids seen with two text hashes are confirmed exactly in the same second pass.

String query ids are identified by a 64-bit hash too. A second independent hash detects two ids
sharing the first one; the scan then starts again with another seed, so the summary is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from storage.corpus.confirmation import confirm_hash_hits
from storage.corpus.keys import id_keys, pair_keys
from storage.corpus.layout import CorpusColumns, CorpusForm, CorpusLayout, corpus_error
from storage.corpus.pair_hashes import PairHashes
from storage.corpus.queries import FoldedQueries, QueryRecords
from storage.corpus.reader import DEFAULT_BATCH_ROWS, iter_raw_batches, pairs_with_ids, to_pairs
from storage.corpus.row_checks import RowProblems, check_rows
from storage.corpus.runs import query_runs
from storage.corpus.source import open_corpus
from storage.location import Location

_SEEDS = (0, 1, 2, 3)


@dataclass(frozen=True, eq=False)
class CorpusSummary:
    """What validation learnt about a valid corpus; enough to plan and write shards.

    ``query_keys`` and ``query_pair_counts`` have one entry per query, in order of first
    appearance; a key is the int64 id itself, or a seeded hash of a string id (``key_seed``).
    Queries without any pair (a nested row with an empty candidates list) are not counted.
    """

    form: CorpusForm
    n_pairs: int
    n_queries: int
    query_id_type: pa.DataType
    doc_id_type: pa.DataType
    query_keys: np.ndarray = field(repr=False)
    query_pair_counts: np.ndarray = field(repr=False)
    queries_contiguous: bool
    key_seed: int


def validate_corpus(
    corpus: Location, columns: CorpusColumns, batch_rows: int = DEFAULT_BATCH_ROWS
) -> CorpusSummary:
    """Check a whole corpus (one Parquet file or a directory of them); raise ``CorpusError`` listing every
    problem found, one per line."""
    for seed in _SEEDS:
        with PairHashes() as pair_hashes:
            scan = _scan(corpus, columns, seed, batch_rows, pair_hashes)
            duplicated_hashes = pair_hashes.repeated()
        problems = scan.row_problems.messages()
        queries = scan.query_records.fold()
        if duplicated_hashes.size or queries.conflicted_keys.size:
            problems += confirm_hash_hits(
                corpus, scan.layout, seed, batch_rows, duplicated_hashes, queries.conflicted_keys
            )
        if problems:
            raise corpus_error(corpus.uri, problems)
        if scan.n_pairs == 0:
            raise corpus_error(
                corpus.uri, [f"no pairs: every list in column {columns.candidates!r} is empty"]
            )
        if not queries.key_collision:
            return _summary(scan, queries, seed)
    raise RuntimeError(f"query id hashes of {corpus.uri} collided under every seed in {_SEEDS}")


@dataclass
class _Scan:
    layout: CorpusLayout
    query_records: QueryRecords
    pair_hashes: PairHashes
    row_problems: RowProblems = field(default_factory=RowProblems)
    n_pairs: int = 0
    # Number of places where the query key changes from one pair to the next: a corpus whose
    # queries each form one contiguous block has n_queries - 1 of them.
    query_changes: int = 0
    last_query_key: np.uint64 | None = None


def _scan(
    location: Location, columns: CorpusColumns, seed: int, batch_rows: int, pair_hashes: PairHashes
) -> _Scan:
    corpus = open_corpus(location, columns)
    layout = corpus.layout
    scan = _Scan(layout, QueryRecords(seed), pair_hashes)
    for raw in iter_raw_batches(corpus, batch_rows):
        check_rows(raw, layout, scan.row_problems)
        pairs = pairs_with_ids(to_pairs(raw.batch, layout))
        if pairs.num_rows:
            _add_pairs(scan, pairs, seed)
    return scan


def _add_pairs(scan: _Scan, pairs: pa.RecordBatch, seed: int) -> None:
    runs = query_runs(pairs)
    run_keys = id_keys(runs.heads(pairs.column("query_id")), seed)
    query_keys = runs.per_pair(run_keys)
    scan.pair_hashes.append(pair_keys(query_keys, id_keys(pairs.column("doc_id"), seed), seed))
    scan.query_records.add(pairs, runs, scan.n_pairs)
    scan.query_changes += int(np.count_nonzero(run_keys[1:] != run_keys[:-1]))
    if scan.last_query_key is not None and run_keys[0] != scan.last_query_key:
        scan.query_changes += 1
    scan.last_query_key = run_keys[-1]
    scan.n_pairs += pairs.num_rows


def _summary(scan: _Scan, queries: FoldedQueries, seed: int) -> CorpusSummary:
    for array in (queries.keys, queries.pair_counts):
        array.setflags(write=False)
    n_queries = int(queries.keys.size)
    return CorpusSummary(
        form=scan.layout.form,
        n_pairs=scan.n_pairs,
        n_queries=n_queries,
        query_id_type=scan.layout.query_id_type,
        doc_id_type=scan.layout.doc_id_type,
        query_keys=queries.keys,
        query_pair_counts=queries.pair_counts,
        queries_contiguous=scan.query_changes == n_queries - 1,
        key_seed=seed,
    )
