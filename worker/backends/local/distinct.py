"""The distinct inputs one scoring call runs through a local model, and how their rows become pair scores.

A joint model (cross-encoder, FlagEmbedding reranker) reads a pair at once: each distinct (query, text)
pair is computed once and its row is the score of every input pair equal to it. A bi-encoder reads each
side alone: each distinct query and each distinct text is embedded once, and a pair's score is the dot
product of its two unit vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import numpy as np

ItemT = TypeVar("ItemT")
Pair = tuple[str, str]
Side = Literal["query", "document"]
SideText = tuple[Side, str]


@dataclass(frozen=True)
class Distinct(Generic[ItemT]):
    """The distinct items of one call, in parts that no batch mixes, and ``combine``: the rows computed for
    each part (in item order) to one score per input pair, in input order."""

    parts: tuple[list[ItemT], ...]
    combine: Callable[[Sequence[np.ndarray]], np.ndarray]
    # For each part, the index of each input pair's item in it (the pair reads one item of every part).
    items_of_pairs: tuple[np.ndarray, ...]

    @property
    def count(self) -> int:
        return sum(len(part) for part in self.parts)


def distinct_pairs(queries: Sequence[str], texts: Sequence[str]) -> Distinct[Pair]:
    """One part, the distinct pairs; each pair's row is its score."""
    pairs, inverse = unique_pairs(queries, texts)
    return Distinct(parts=(pairs,), combine=lambda rows: rows[0][inverse], items_of_pairs=(inverse,))


def distinct_sides(queries: Sequence[str], texts: Sequence[str]) -> Distinct[SideText]:
    """Two parts, the distinct queries and the distinct texts, each item tagged with its side; each row is
    a unit vector, and a pair's score is the dot product of its query's and its text's."""
    _check_pairing(queries, texts)
    unique_queries, query_index = unique_strings(queries)
    unique_texts, text_index = unique_strings(texts)

    def cosine(rows: Sequence[np.ndarray]) -> np.ndarray:
        query_vectors, text_vectors = rows
        return np.einsum("ij,ij->i", query_vectors[query_index], text_vectors[text_index])

    return Distinct(
        parts=(
            [("query", query) for query in unique_queries],
            [("document", text) for text in unique_texts],
        ),
        combine=cosine,
        items_of_pairs=(query_index, text_index),
    )


def unique_pairs(queries: Sequence[str], texts: Sequence[str]) -> tuple[list[Pair], np.ndarray]:
    """Distinct (query, text) pairs in first-seen order, and for each input pair its index among them."""
    _check_pairing(queries, texts)
    position: dict[Pair, int] = {}
    inverse = np.fromiter(
        (
            position.setdefault((query, text), len(position))
            for query, text in zip(queries, texts, strict=True)
        ),
        dtype=np.int64,
        count=len(queries),
    )
    return list(position), inverse


def unique_strings(strings: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct strings in first-seen order, and for each input its index among them."""
    position: dict[str, int] = {}
    inverse = np.fromiter(
        (position.setdefault(string, len(position)) for string in strings), dtype=np.int64, count=len(strings)
    )
    return list(position), inverse


def _check_pairing(queries: Sequence[str], texts: Sequence[str]) -> None:
    if len(queries) != len(texts):
        raise ValueError(f"got {len(queries)} queries but {len(texts)} texts; they must pair up one to one")
