"""Content hashes of scored pairs: what decides whether an earlier score can be reused.

A pair's hash covers the model spec with the scoring settings that change scores, the query text and
the document text; ids are left out on purpose, so a document that moved or got a new id keeps its
score while any change of wording is scored again. 64-bit BLAKE2b, stored as uint64 in every output row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

SEPARATOR = "\x1f"  # unit separator: cannot be confused with text content boundaries


def scoring_fingerprint(model: str, max_length: int | None) -> str:
    """What besides the texts determines a score: the model spec and the truncation length."""
    return f"{model}{SEPARATOR}max_length={max_length or 'model'}"


def pair_hashes(fingerprint: str, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """One uint64 per pair (query i, text i)."""
    prefix = hashlib.blake2b(fingerprint.encode(), digest_size=8)
    hashes = np.empty(len(queries), dtype=np.uint64)
    for index, (query, text) in enumerate(zip(queries, texts, strict=True)):
        digest = prefix.copy()
        digest.update(f"{SEPARATOR}{query}{SEPARATOR}{text}".encode(errors="surrogatepass"))
        hashes[index] = int.from_bytes(digest.digest(), "little")
    return hashes
