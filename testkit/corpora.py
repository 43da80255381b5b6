"""Synthetic corpora for pipeline tests: realistic shapes (short queries, documents of varied length)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.location import Location, parse_location

WORDS = [
    "search",
    "index",
    "query",
    "document",
    "rerank",
    "score",
    "model",
    "vector",
    "token",
    "batch",
    "shard",
    "worker",
    "queue",
    "redis",
    "passport",
    "herb",
    "sky",
    "wifi",
    "vitamin",
    "bread",
    "mountain",
    "river",
    "city",
    "music",
    "history",
    "science",
    "garden",
    "ocean",
    "engine",
    "market",
    "travel",
    "health",
    "energy",
    "climate",
    "planet",
    "galaxy",
    "coffee",
    "winter",
    "summer",
    "library",
    "school",
]


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def long_corpus(
    n_queries: int, docs_per_query: int, seed: int = 0, integer_ids: bool = True, shuffle: bool = True
) -> pa.Table:
    """One row per pair; with ``shuffle`` the rows of a query are interleaved with other queries'."""
    rng = random.Random(seed)
    rows = []
    for q in range(n_queries):
        query = _text(rng, 2, 8)
        for d in range(docs_per_query):
            rows.append(
                (
                    q if integer_ids else f"q{q}",
                    query,
                    q * 1000 + d if integer_ids else f"d{q}-{d}",
                    _text(rng, 5, 120),
                )
            )
    if shuffle:
        rng.shuffle(rows)
    query_ids, queries, doc_ids, texts = zip(*rows, strict=True)
    return pa.table(
        {"query_id": list(query_ids), "query": list(queries), "doc_id": list(doc_ids), "text": list(texts)}
    )


def nested_corpus(n_queries: int, docs_per_query: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "query_id": [f"q{q}" for q in range(n_queries)],
            "query": [_text(rng, 2, 8) for _ in range(n_queries)],
            "candidates": [
                [{"doc_id": f"d{q}-{d}", "text": _text(rng, 5, 80)} for d in range(docs_per_query)]
                for q in range(n_queries)
            ],
        }
    )


def write(table: pa.Table, path: Path, row_group_size: int = 4096) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def location(path: Path) -> Location:
    """A local corpus file or directory as the corpus functions take it."""
    return parse_location(str(path))
