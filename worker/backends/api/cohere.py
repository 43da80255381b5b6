"""Cohere Rerank v2 (``POST /v2/rerank``): billed in search units, reported in ``meta.billed_units``.

Cohere recommends at most 1,000 documents per request and truncates each document to
``max_tokens_per_doc`` tokens (default 4,096), which we send explicitly. A search unit is one query
with up to 100 documents, so where the answer reports no units (or never came, after a timeout or a
5xx that may still have been processed) a request is counted at ``ceil(documents / 100)`` units.
Cohere reports no tokens for rerank; the ledger's tokens are the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class CohereProvider(Provider):
    path = "/v2/rerank"
    score_meaning = "relevance_score per document (Cohere rerank v2)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {
            "model": model,
            "query": query,
            "documents": list(texts),
            "max_tokens_per_doc": limits.max_tokens_per_document,
        }

    def parse(self, payload: Any, n_texts: int) -> Answer:
        results = payload.get("results") if isinstance(payload, dict) else None
        scores = scores_by_index(results, n_texts, "relevance_score")
        units = optional_count(payload, "meta", "billed_units", "search_units")
        return Answer(scores=scores, search_units=units)

    def estimate_search_units(self, n_texts: int) -> int:
        return math.ceil(n_texts / 100)
