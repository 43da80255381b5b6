"""Baidu AI Cloud Qianfan rerankers, v2 API (``POST /v2/rerankers`` on ``qianfan.baidubce.com``, the
Qianfan API key as ``Authorization: Bearer``): ``bce-reranker-base`` and models trained on the platform.
Request ``{model, query, documents, top_n}``; answer ``{object: "rerank_list", results[{index,
relevance_score, document}], usage{prompt_tokens, total_tokens}}``.

Qianfan's published limits: at most 64 documents a request, each cut at 1,024 tokens (4,096 characters),
the query at 400 tokens. (The v1 endpoint under ``aip.baidubce.com`` with an ``access_token`` from an
AK/SK pair is the older form of the same API; its successor, used here, takes the key directly.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class QianfanProvider(Provider):
    path = "/v2/rerankers"
    score_meaning = "relevance_score per document (Qianfan rerankers)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {
            "model": model or "bce-reranker-base",
            "query": query,
            "documents": list(texts),
            "top_n": len(texts),
        }

    def parse(self, payload: Any, n_texts: int) -> Answer:
        results = payload.get("results") if isinstance(payload, dict) else None
        scores = scores_by_index(results, n_texts, "relevance_score")
        tokens = optional_count(payload, "usage", "total_tokens")
        if tokens is None:
            tokens = optional_count(payload, "usage", "prompt_tokens")
        return Answer(scores=scores, tokens=tokens)
