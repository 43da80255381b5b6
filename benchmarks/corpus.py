"""Benchmark pairs shaped like a reranking workload: short queries, candidates of log-normal length.

Words are drawn from the whole words of the model's own vocabulary with Zipf frequencies, so each word is
about one token and the token counts follow the word counts. Each candidate document gets a random share
of its query's words planted in it; that share is the synthetic relevance label a score head is fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

QUERY_WORDS = (2, 8)  # inclusive range of words per query
DOC_MEDIAN_WORDS = 70.0
DOC_SIGMA = 0.8  # of log(words): about 1% of documents pass 450 words, so their pairs pass 512 tokens
DOC_WORDS = (5, 2000)


@dataclass(frozen=True)
class BenchCorpus:
    """One row per (query, document) pair, documents of a query adjacent."""

    query_ids: np.ndarray  # int64
    queries: list[str]
    texts: list[str]
    relevance: np.ndarray  # float64 in [0, 1]: share of the query's words planted in the document

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.queries, self.texts, strict=True))

    def query_slices(self) -> list[slice]:
        """Where each query's documents are, in order."""
        starts = np.flatnonzero(np.r_[True, self.query_ids[1:] != self.query_ids[:-1]])
        ends = np.r_[starts[1:], len(self.query_ids)]
        return [slice(int(start), int(end)) for start, end in zip(starts, ends, strict=True)]

    def head(self, n_queries: int) -> BenchCorpus:
        """The first ``n_queries`` queries with all their documents."""
        slices = self.query_slices()[:n_queries]
        end = slices[-1].stop if slices else 0
        return BenchCorpus(self.query_ids[:end], self.queries[:end], self.texts[:end], self.relevance[:end])

    def write_parquet(self, path: Path) -> Path:
        """The long corpus form ``scripts/submit.py`` reads: query_id, query, doc_id, text."""
        table = pa.table(
            {
                "query_id": pa.array(self.query_ids, pa.int64()),
                "query": self.queries,
                "doc_id": pa.array(np.arange(len(self)), pa.int64()),
                "text": self.texts,
            }
        )
        pq.write_table(table, path)
        return path


def whole_words(tokenizer: Any) -> list[str]:
    """Alphabetic tokens of at least three letters that are whole words in the tokenizer's vocabulary."""
    return sorted(
        token for token in tokenizer.get_vocab() if token.isascii() and token.isalpha() and len(token) >= 3
    )


def synthetic_corpus(words: list[str], n_queries: int, docs_per_query: int, seed: int = 0) -> BenchCorpus:
    """``n_queries`` queries of 2-8 words with ``docs_per_query`` candidates each."""
    rng = np.random.default_rng(seed)
    # Zipf frequencies over a seeded shuffle, so common words are not the alphabetically first ones.
    frequency = 1.0 / np.arange(1, len(words) + 1)
    frequency /= frequency.sum()
    shuffled = [words[index] for index in rng.permutation(len(words))]

    def draw(count: int) -> list[str]:
        return [shuffled[index] for index in rng.choice(len(shuffled), size=count, p=frequency)]

    query_ids, queries, texts, relevance = [], [], [], []
    for query_id in range(n_queries):
        query_words = draw(int(rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1)))
        query = " ".join(query_words)
        for _ in range(docs_per_query):
            length = int(np.clip(rng.lognormal(np.log(DOC_MEDIAN_WORDS), DOC_SIGMA), *DOC_WORDS))
            document = draw(length)
            planted = int(rng.integers(0, len(query_words) + 1))
            for word in rng.choice(query_words, size=planted, replace=False):
                document.insert(int(rng.integers(0, len(document) + 1)), str(word))
            query_ids.append(query_id)
            queries.append(query)
            texts.append(" ".join(document))
            relevance.append(planted / len(query_words))
    return BenchCorpus(np.asarray(query_ids, dtype=np.int64), queries, texts, np.asarray(relevance))
