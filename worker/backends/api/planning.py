"""Cutting a shard's pairs into API requests: one query per request, at most ``max_documents`` documents
and ``max_tokens_per_request`` estimated tokens each. A query with more documents spans several
requests; since every API returns an absolute score per document, its scores stay comparable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.errors import PermanentProviderError
from core.kinds import ProviderLimits


@dataclass(frozen=True)
class PlannedRequest:
    """One request: ``query`` against ``texts``, which are pairs ``pair_indices`` of the shard."""

    query: str
    texts: tuple[str, ...]
    pair_indices: tuple[int, ...]
    estimated_tokens: int


Estimator = Callable[[str, Sequence[str]], int]


def plan_requests(
    queries: Sequence[str], texts: Sequence[str], limits: ProviderLimits, estimate: Estimator
) -> list[PlannedRequest]:
    """Requests covering every pair exactly once, grouped by query in order of first appearance.

    Raises ``PermanentProviderError`` when a single pair is estimated above the per-request token
    limit, since no split can send it."""
    if len(queries) != len(texts):
        raise ValueError(f"got {len(queries)} queries but {len(texts)} texts; they must pair up one to one")
    by_query: dict[str, list[int]] = {}
    for index, query in enumerate(queries):
        by_query.setdefault(query, []).append(index)
    token_cap = limits.max_tokens_per_request
    requests: list[PlannedRequest] = []
    for query, indices in by_query.items():
        batch: list[int] = []
        batch_tokens = 0
        for index in indices:
            pair_tokens = estimate(query, [texts[index]])
            if token_cap is not None and pair_tokens > token_cap:
                raise PermanentProviderError(
                    f"pair {index} is estimated at {pair_tokens} tokens, more than the {token_cap} one "
                    "request may carry; raise RERANK_API_TOKENS_PER_MINUTE or shorten the document"
                )
            full = len(batch) >= limits.max_documents
            too_many_tokens = token_cap is not None and batch_tokens + pair_tokens > token_cap
            if batch and (full or too_many_tokens):
                requests.append(_request(query, texts, batch, estimate))
                batch, batch_tokens = [], 0
            batch.append(index)
            batch_tokens += pair_tokens
        if batch:
            requests.append(_request(query, texts, batch, estimate))
    return requests


def _request(query: str, texts: Sequence[str], indices: list[int], estimate: Estimator) -> PlannedRequest:
    batch_texts = tuple(texts[index] for index in indices)
    return PlannedRequest(query, batch_texts, tuple(indices), estimate(query, batch_texts))
