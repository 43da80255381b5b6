"""The ``POST /v1/rerank`` shape Jina defined and many servers speak: Jina's API, and the
OpenAI-compatible rerank endpoint of vLLM, Xinference, LocalAI, GPUStack, SiliconFlow, Novita, Infinity
and others (base URL configurable). Request ``{model, query, documents, top_n}``; answer
``results[{index, relevance_score}]`` with the tokens counted in ``usage.total_tokens`` (Jina, vLLM,
LocalAI, Together AI), ``usage.prompt_tokens``, ``meta.tokens.input_tokens`` (Xinference) or
``tokens.input_tokens`` (SiliconFlow), whichever the server reports.

We ask for every document back (``top_n`` = all) and read each one's ``relevance_score``, never its rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class RerankV1Provider(Provider):
    path = "/v1/rerank"
    score_meaning = "relevance_score per document (/v1/rerank)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "documents": list(texts), "top_n": len(texts)}
        if model is not None:
            body["model"] = model
        return body

    def parse(self, payload: Any, n_texts: int) -> Answer:
        results = payload.get("results") if isinstance(payload, dict) else None
        scores = scores_by_index(results, n_texts, "relevance_score")
        return Answer(scores=scores, tokens=reported_tokens(payload))


def reported_tokens(payload: Any) -> int | None:
    """The tokens a /v1/rerank server reports, wherever its dialect puts them (None: nowhere)."""
    for path in (
        ("usage", "total_tokens"),
        ("usage", "prompt_tokens"),
        ("meta", "tokens", "input_tokens"),
        ("tokens", "input_tokens"),
    ):
        tokens = optional_count(payload, *path)
        if tokens is not None:
            return tokens
    return None


class JinaProvider(RerankV1Provider):
    """Jina's hosted reranker: the same shape, with the documents not echoed back."""

    score_meaning = "relevance_score per document (Jina /v1/rerank)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {**super().body(model, query, texts, limits), "return_documents": False}
