"""Content hashes computed over whole columns equal, value for value, the per-pair definition every earlier
run's output was written with (``--reuse`` matches on them)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.shards.content_hash import SEPARATOR, pair_hashes, scoring_fingerprint


def per_pair_hashes(fingerprint: str, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """The definition as it was first written: one hashlib BLAKE2b per pair, in a Python loop."""
    prefix = hashlib.blake2b(fingerprint.encode(), digest_size=8)
    hashes = np.empty(len(queries), dtype=np.uint64)
    for index, (query, text) in enumerate(zip(queries, texts, strict=True)):
        digest = prefix.copy()
        digest.update(f"{SEPARATOR}{query}{SEPARATOR}{text}".encode(errors="surrogatepass"))
        hashes[index] = int.from_bytes(digest.digest(), "little")
    return hashes


def column(values: Sequence[str]) -> pa.Array:
    return pa.array(values, pa.large_string())


# Arrow strings are UTF-8, so lone surrogates (category Cs) never reach the hash; every other code point
# does, from ASCII to astral planes. Long texts cross several 128-byte blocks.
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
pairs = st.lists(st.tuples(unicode_text, unicode_text), max_size=40)


@settings(max_examples=300, deadline=None)
@given(fingerprint=unicode_text, pairs=pairs)
def test_column_hashes_equal_the_per_pair_definition(fingerprint: str, pairs: list[tuple[str, str]]) -> None:
    queries = [query for query, _ in pairs]
    texts = [text for _, text in pairs]
    expected = per_pair_hashes(fingerprint, queries, texts)
    assert pair_hashes(fingerprint, column(queries), column(texts)).tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(
    fingerprint=unicode_text,
    runs=st.lists(
        st.tuples(st.sampled_from(["", "q", "über", "x" * 200]), st.lists(unicode_text, max_size=9))
    ),
)
def test_runs_of_one_query_hash_like_single_pairs(
    fingerprint: str, runs: list[tuple[str, list[str]]]
) -> None:
    queries = [query for query, texts in runs for _ in texts]
    texts = [text for _, texts in runs for text in texts]
    expected = per_pair_hashes(fingerprint, queries, texts)
    assert pair_hashes(fingerprint, column(queries), column(texts)).tolist() == expected.tolist()
    # The same pairs with the queries interleaved: hashed query by query, then put back in place.
    order = sorted(range(len(queries)), key=lambda index: (index % 3, index))
    shuffled_queries, shuffled_texts = [queries[i] for i in order], [texts[i] for i in order]
    assert pair_hashes(fingerprint, column(shuffled_queries), column(shuffled_texts)).tolist() == [
        expected[i] for i in order
    ]


def test_texts_around_block_boundaries() -> None:
    # BLAKE2b works in 128-byte blocks; messages end just before, on and just after each edge.
    fingerprint = scoring_fingerprint("m", None)
    overhead = len(fingerprint.encode()) + 2 * len(SEPARATOR) + 1
    texts = ["x" * (n - overhead) for edge in (1, 2, 3) for n in range(edge * 128 - 3, edge * 128 + 4)]
    queries = ["q"] * len(texts)
    expected = per_pair_hashes(fingerprint, queries, texts)
    assert pair_hashes(fingerprint, column(queries), column(texts)).tolist() == expected.tolist()


def test_many_pairs_in_chunked_slices() -> None:
    n = 5000
    rng = np.random.default_rng(7)
    words = ["passport", "über", "日本語", "sky", "🙂", "blue", ""]
    queries = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    texts = [" ".join(rng.choice(words, int(rng.integers(0, 90)))) for _ in range(n)]
    fingerprint = scoring_fingerprint("cross-encoder:cross-encoder/ms-marco-MiniLM-L-6-v2", None)
    full_queries, full_texts = column(["x", *queries]), column(["y", *texts])
    chunked_queries = pa.chunked_array([full_queries.slice(1, 1000), full_queries.slice(1001)])
    chunked_texts = pa.chunked_array([full_texts.slice(1, 500), full_texts.slice(501)])
    expected = per_pair_hashes(fingerprint, queries, texts)
    assert pair_hashes(fingerprint, chunked_queries, chunked_texts).tolist() == expected.tolist()


def test_plain_strings_hash_like_large_strings() -> None:
    fingerprint = scoring_fingerprint("m", 512)
    large = pair_hashes(fingerprint, column(["q"]), column(["t"]))
    plain = pair_hashes(fingerprint, pa.array(["q"]), pa.array(["t"]))
    assert large.tolist() == plain.tolist() == per_pair_hashes(fingerprint, ["q"], ["t"]).tolist()


def test_no_pairs_and_null_texts() -> None:
    assert pair_hashes("m", column([]), column([])).size == 0
    with pytest.raises(ValueError, match="null"):
        pair_hashes("m", column(["q"]), column([None]))
