"""Content hashes of scored pairs: what decides whether an earlier score can be reused.

A pair's hash covers the model spec with the scoring settings that change scores, the query text and
the document text; ids are left out on purpose, so a document that moved or got a new id keeps its
score while any change of wording is scored again. It is the 64-bit BLAKE2b of the UTF-8 bytes of
``fingerprint + SEPARATOR + query + SEPARATOR + text``, read as a little-endian uint64, and stored in
every output row: earlier runs' outputs are matched on it, so the definition never changes.

The hashes of a whole column are computed at once, from slices of the Arrow buffers (the UTF-8 bytes as
they are in the corpus), so no Python string is built or encoded per pair. Pairs are taken query by query
(in their order when a corpus lists a query's candidates together, else sorted by query and put back):
the BLAKE2b state after ``fingerprint + SEPARATOR + query + SEPARATOR`` is computed once per query and
copied for each text. Where queries repeat too little for that to pay, Arrow joins the three strings of
every pair into one binary column and each message is digested whole. Both give the same values; the
first digests fewer bytes per pair and skips the join (~1 µs a pair instead of ~1.7). (A BLAKE2b
written in numpy over the whole column gave the same values but ran ~3x slower than these C digests on
2 cores.)
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEPARATOR = "\x1f"  # unit separator: cannot be confused with text content boundaries


def scoring_fingerprint(model: str, max_length: int | None) -> str:
    """What besides the texts determines a score: the model spec and the truncation length."""
    return f"{model}{SEPARATOR}max_length={max_length or 'model'}"


def pair_hashes(
    fingerprint: str, queries: pa.Array | pa.ChunkedArray, texts: pa.Array | pa.ChunkedArray
) -> np.ndarray:
    """One uint64 per pair (query i, text i) of two string columns without nulls."""
    if queries.null_count or texts.null_count:
        raise ValueError("content hashes need every query and text; some are null")
    queries, texts = _large_binary(queries), _large_binary(texts)
    count = len(texts)
    if count == 0:
        return np.empty(0, dtype=np.uint64)
    starts = _run_starts(queries)
    if _worth_prefixes(starts, count):
        return _prefix_hashes(fingerprint, queries, texts, starts)
    # A query's pairs apart from each other (an interleaved corpus): hashed in query order, put back.
    order = pc.sort_indices(queries)
    sorted_queries = queries.take(order)
    starts = _run_starts(sorted_queries)
    if not _worth_prefixes(starts, count):
        return _whole_message_hashes(fingerprint, queries, texts)
    hashes = np.empty(count, dtype=np.uint64)
    hashes[order.to_numpy()] = _prefix_hashes(fingerprint, sorted_queries, texts.take(order), starts)
    return hashes


def _run_starts(queries: pa.Array) -> np.ndarray:
    """Where each run of equal consecutive queries starts."""
    count = len(queries)
    differs = pc.not_equal(queries.slice(1), queries.slice(0, count - 1)).to_numpy(zero_copy_only=False)
    return np.flatnonzero(np.r_[True, differs])


def _worth_prefixes(starts: np.ndarray, count: int) -> bool:
    """Prefix states pay off when runs average a few pairs."""
    return starts.size * 4 <= count


def _prefix_hashes(fingerprint: str, queries: pa.Array, texts: pa.Array, starts: np.ndarray) -> np.ndarray:
    head = (fingerprint + SEPARATOR).encode()
    separator = SEPARATOR.encode()
    query_offsets, query_data = _offsets_and_data(queries)
    text_bounds, text_data = _offsets_and_data(texts)
    digests: list[bytes] = []
    append = digests.append
    for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(texts)], strict=True):
        prefix = hashlib.blake2b(head, digest_size=8)
        prefix.update(query_data[query_offsets[start] : query_offsets[start + 1]])
        prefix.update(separator)
        copy = prefix.copy
        for index in range(start, stop):
            digest = copy()
            digest.update(text_data[text_bounds[index] : text_bounds[index + 1]])
            append(digest.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


def _whole_message_hashes(fingerprint: str, queries: pa.Array, texts: pa.Array) -> np.ndarray:
    binary = pa.large_binary()
    messages = pc.binary_join_element_wise(
        pa.scalar(fingerprint.encode(), binary), queries, texts, pa.scalar(SEPARATOR.encode(), binary)
    )
    bounds, data = _offsets_and_data(messages)
    digests = (
        hashlib.blake2b(data[start:end], digest_size=8).digest() for start, end in itertools.pairwise(bounds)
    )
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


def _large_binary(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The values as one large_binary array (strings keep their UTF-8 bytes)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
        values = values.cast(pa.large_string() if pa.types.is_string(values.type) else pa.large_binary())
    return values.cast(pa.large_binary())


def _offsets_and_data(values: pa.Array) -> tuple[list[int], memoryview]:
    """Where each value starts and ends in the data, and the data."""
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, count=len(values) + 1, offset=values.offset * 8)
    return offsets.tolist(), memoryview(data_buffer if data_buffer is not None else b"")
