"""The exact second pass of validation, run only when the hash-based first pass found hits.

Only the rows behind the hits are kept: their ids for duplicate pairs, and one (query_id, query)
per distinct text for query ids seen with two text hashes. Exact Arrow grouping then tells real
duplicates and conflicts from hash collisions.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.corpus.keys import id_keys, pair_keys
from storage.corpus.layout import CorpusLayout
from storage.corpus.reader import iter_raw_batches, pairs_with_ids, to_pairs
from storage.corpus.source import open_corpus
from storage.location import Location

_SHOWN_CHARS = 60


def confirm_hash_hits(
    corpus: Location,
    layout: CorpusLayout,
    seed: int,
    batch_rows: int,
    duplicated_pair_hashes: np.ndarray,
    conflicted_query_keys: np.ndarray,
) -> list[str]:
    """Messages for the real duplicate pairs and real query-text conflicts behind the hash hits."""
    pair_hits: list[pa.Table] = []
    text_hits: list[pa.Table] = []
    for raw in iter_raw_batches(open_corpus(corpus, layout.columns), batch_rows):
        pairs = pa.Table.from_batches([pairs_with_ids(to_pairs(raw.batch, layout))])
        query_keys = id_keys(pairs.column("query_id"), seed)
        doc_keys = id_keys(pairs.column("doc_id"), seed)
        is_pair_hit = np.isin(pair_keys(query_keys, doc_keys, seed), duplicated_pair_hashes)
        if is_pair_hit.any():
            pair_hits.append(pairs.select(["query_id", "doc_id"]).filter(is_pair_hit))
        is_text_hit = np.isin(query_keys, conflicted_query_keys)
        if is_text_hit.any():
            texts = pairs.select(["query_id", "query"]).filter(is_text_hit)
            text_hits.append(texts.group_by(["query_id", "query"], use_threads=False).aggregate([]))
    messages = []
    if pair_hits:
        messages += _duplicate_messages(pa.concat_tables(pair_hits), layout)
    if text_hits:
        messages += _conflict_messages(pa.concat_tables(text_hits), layout)
    return messages


def _duplicate_messages(pairs: pa.Table, layout: CorpusLayout) -> list[str]:
    counts = pairs.group_by(["query_id", "doc_id"], use_threads=False).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if repeated.num_rows == 0:
        return []
    extra_rows = pc.sum(repeated.column("count_all")).as_py() - repeated.num_rows
    example = repeated.slice(0, 1).to_pylist()[0]
    query_id, doc_id = layout.columns.query_id, _doc_id_label(layout)
    rows = "1 row is a duplicate" if extra_rows == 1 else f"{extra_rows} rows are duplicates"
    return [
        f"columns {query_id!r}, {doc_id!r}: {rows} of an earlier ({query_id}, {doc_id}) pair "
        f"(e.g. {query_id}={_shown(example['query_id'])}, {doc_id}={_shown(example['doc_id'])} "
        f"appears {example['count_all']} times)"
    ]


def _conflict_messages(texts: pa.Table, layout: CorpusLayout) -> list[str]:
    distinct = texts.group_by(["query_id", "query"], use_threads=False).aggregate([])
    per_id = distinct.group_by(["query_id"], use_threads=False).aggregate([([], "count_all")])
    conflicting = per_id.filter(pc.greater(per_id.column("count_all"), 1))
    if conflicting.num_rows == 0:
        return []
    example_id = conflicting.column("query_id")[0]
    example_texts = distinct.filter(pc.equal(distinct.column("query_id"), example_id)).column("query")
    query_id, query = layout.columns.query_id, layout.columns.query
    ids = "1 query id has" if conflicting.num_rows == 1 else f"{conflicting.num_rows} query ids have"
    return [
        f"column {query!r}: {ids} more than one query text (e.g. {query_id}={_shown(example_id.as_py())} "
        f"has {_shown(example_texts[0].as_py())} and {_shown(example_texts[1].as_py())})"
    ]


def _doc_id_label(layout: CorpusLayout) -> str:
    names = layout.columns
    return f"{names.candidates}.{names.doc_id}" if layout.form == "nested" else names.doc_id


def _shown(value: object) -> str:
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        value = value[: _SHOWN_CHARS - 3] + "..."
    return repr(value)
