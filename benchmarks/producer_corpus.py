"""Large synthetic corpora for the producer benchmark, written streaming so that generating one takes
memory independent of its size.

Shaped like a retrieval job's output: string ids (``q00001234``, ``d000012345678``), queries of 2-8
words, 20-100 candidates per query, passages of log-normal length (median 45 words, like MS MARCO's),
words drawn with Zipf frequencies from a fixed vocabulary of made-up words. Texts are assembled in numpy
straight into Arrow string buffers, with no Python string per word or pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DOCS_PER_QUERY = (20, 100)  # inclusive
QUERY_WORDS = (2, 8)  # inclusive
DOC_MEDIAN_WORDS = 45.0
DOC_SIGMA = 0.5
DOC_WORDS = (8, 250)
VOCABULARY = 20_000
QUERIES_PER_BATCH = 256  # about 15k pairs, 5 MB of text
ROW_GROUP_ROWS = 65536


@dataclass(frozen=True)
class CorpusShape:
    """What to generate: about ``n_pairs`` pairs (whole queries), in ``files`` files; ``interleaved``
    shuffles the rows within each batch of queries, so queries are not contiguous."""

    n_pairs: int
    files: int = 1
    interleaved: bool = False
    seed: int = 0

    @property
    def name(self) -> str:
        order = "interleaved" if self.interleaved else "contiguous"
        suffix = ".parquet" if self.files == 1 else ""
        return f"corpus-{self.n_pairs}-{self.files}f-{order}-s{self.seed}-v1{suffix}"


def write_corpus(shape: CorpusShape, target: Path) -> int:
    """Write the corpus at ``target`` (a file, or a directory of ``part-NNNNN.parquet``); returns the
    number of pairs. It is written under a temporary name and renamed once complete."""
    numbers = _Numbers(np.random.default_rng(shape.seed))
    vocabulary = _vocabulary(numbers.rng)
    partial = target.with_name(f".{target.name}.partial")
    if shape.files > 1:
        partial.mkdir(parents=True, exist_ok=True)
    pairs_per_file = -(-shape.n_pairs // shape.files)
    written = 0
    for index in range(shape.files):
        path = partial / f"part-{index:05d}.parquet" if shape.files > 1 else partial
        budget = min(pairs_per_file, shape.n_pairs - written)
        with pq.ParquetWriter(path, _SCHEMA, compression="snappy") as writer:
            pending: list[pa.RecordBatch] = []
            for batch in _batches(numbers, vocabulary, budget, shape.interleaved):
                pending.append(batch)
                written += batch.num_rows
                if sum(part.num_rows for part in pending) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
                    pending = []
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
    partial.rename(target)
    return written


_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("query", pa.string()), ("doc_id", pa.string()), ("text", pa.string())]
)


@dataclass(frozen=True)
class _Vocabulary:
    data: np.ndarray  # every word's bytes, then one space
    starts: np.ndarray
    lengths: np.ndarray  # including the space
    frequency: np.ndarray


def _vocabulary(rng: np.random.Generator) -> _Vocabulary:
    syllables = np.array([c + v for c in "bcdfghklmnprstvz" for v in "aeiou"])
    counts = rng.integers(1, 5, size=VOCABULARY)
    words = ["".join(rng.choice(syllables, size=count)) + " " for count in counts]
    encoded = [word.encode() for word in words]
    lengths = np.array([len(word) for word in encoded], dtype=np.int64)
    frequency = 1.0 / np.arange(1, VOCABULARY + 1)
    return _Vocabulary(
        np.frombuffer(b"".join(encoded), dtype=np.uint8),
        np.cumsum(lengths) - lengths,
        lengths,
        frequency / frequency.sum(),
    )


def _texts(rng: np.random.Generator, vocabulary: _Vocabulary, word_counts: np.ndarray) -> pa.Array:
    """One string per entry of word_counts, of that many words separated by single spaces."""
    words = rng.choice(VOCABULARY, size=int(word_counts.sum()), p=vocabulary.frequency)
    word_lengths = vocabulary.lengths[words]
    first_byte = np.cumsum(word_lengths) - word_lengths
    # Byte j of the output is byte (j - first byte of its word) of its word in the vocabulary.
    source = np.repeat(vocabulary.starts[words] - first_byte, word_lengths) + np.arange(word_lengths.sum())
    data = vocabulary.data[source]
    # Drop the space after each text's last word.
    text_bytes = np.add.reduceat(word_lengths, np.cumsum(word_counts) - word_counts)
    keep = np.ones(data.size, dtype=bool)
    keep[np.cumsum(text_bytes) - 1] = False
    offsets = np.concatenate([[0], np.cumsum(text_bytes - 1)]).astype(np.int32)
    return pa.StringArray.from_buffers(
        len(word_counts), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data[keep]))
    )


def _ids(prefix: str, numbers: np.ndarray, digits: int) -> pa.Array:
    padded = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), digits, padding="0")
    return pc.binary_join_element_wise(prefix, padded, "")


class _Numbers:
    """The random generator and the next query and document numbers, across files."""

    # Odd and prime to 10: i -> i * _SPREAD mod 10**12 visits every document number once.
    _SPREAD = 982_451_653

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.next_query = 0
        self.next_doc = 0

    def doc_numbers(self, count: int) -> np.ndarray:
        indices = np.arange(self.next_doc, self.next_doc + count, dtype=np.int64)
        self.next_doc += count
        return (indices * self._SPREAD) % 10**12


def _batches(
    numbers: _Numbers, vocabulary: _Vocabulary, budget: int, interleaved: bool
) -> Iterator[pa.RecordBatch]:
    """Record batches of whole queries until ``budget`` pairs (the last query cut to fit)."""
    rng = numbers.rng
    left = budget
    while left > 0:
        per_query = rng.integers(DOCS_PER_QUERY[0], DOCS_PER_QUERY[1] + 1, size=QUERIES_PER_BATCH)
        n_queries = min(int(np.searchsorted(np.cumsum(per_query), left)) + 1, QUERIES_PER_BATCH)
        per_query = per_query[:n_queries]
        per_query[-1] -= max(0, int(per_query.sum()) - left)
        query_numbers = np.arange(numbers.next_query, numbers.next_query + n_queries)
        numbers.next_query += n_queries
        queries = _texts(rng, vocabulary, rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1, size=n_queries))
        of_pair = np.repeat(np.arange(n_queries), per_query)
        if interleaved:
            of_pair = of_pair[rng.permutation(of_pair.size)]
        n_docs = of_pair.size
        doc_words = np.clip(
            rng.lognormal(np.log(DOC_MEDIAN_WORDS), DOC_SIGMA, size=n_docs), *DOC_WORDS
        ).astype(np.int64)
        query_of_pair = pa.array(of_pair)
        columns = [
            _ids("q", query_numbers, 8).take(query_of_pair),
            queries.take(query_of_pair),
            _ids("d", numbers.doc_numbers(n_docs), 12),
            _texts(rng, vocabulary, doc_words),
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=_SCHEMA)
        left -= n_docs
