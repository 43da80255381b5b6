"""Voyage AI rerank (``POST /v1/rerank``): answer ``data[{index, relevance_score}]``, ``usage.total_tokens``.

Limits from Voyage's API reference: at most 1,000 documents per request; query plus any one document at
most 32,000 tokens for rerank-2.5 (``truncation: true`` lets Voyage cut longer ones); and at most 600K
tokens per request counted as ``query tokens x documents + document tokens``, which is exactly how
``Provider.estimate_request`` counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class VoyageProvider(Provider):
    path = "/v1/rerank"
    score_meaning = "relevance_score per document (Voyage rerank)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {"model": model, "query": query, "documents": list(texts), "truncation": True}

    def parse(self, payload: Any, n_texts: int) -> Answer:
        data = payload.get("data") if isinstance(payload, dict) else None
        scores = scores_by_index(data, n_texts, "relevance_score")
        return Answer(scores=scores, tokens=optional_count(payload, "usage", "total_tokens"))
