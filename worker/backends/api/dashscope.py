"""Alibaba Cloud Model Studio (DashScope) text rerank
(``POST /api/v1/services/rerank/text-rerank/text-rerank``, key as ``Authorization: Bearer``): the
gte-rerank and qwen3-rerank models. Request ``{model, input: {query, documents}, parameters: {top_n,
return_documents}}``; answer ``output.results[{index, relevance_score}]`` and ``usage.total_tokens``.

DashScope's published limits for gte-rerank-v2: 500 documents a request, 4,000 tokens a query or
document (longer ones are truncated), 30,000 tokens in all (counted as the query once per document plus
the documents, which is how ``Provider.estimate_request`` counts). Billed per input token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class DashScopeProvider(Provider):
    path = "/api/v1/services/rerank/text-rerank/text-rerank"
    score_meaning = "relevance_score per document (DashScope text rerank)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {
            "model": model,
            "input": {"query": query, "documents": list(texts)},
            "parameters": {"top_n": len(texts), "return_documents": False},
        }

    def parse(self, payload: Any, n_texts: int) -> Answer:
        output = payload.get("output") if isinstance(payload, dict) else None
        results = output.get("results") if isinstance(output, dict) else None
        scores = scores_by_index(results, n_texts, "relevance_score")
        return Answer(scores=scores, tokens=optional_count(payload, "usage", "total_tokens"))
