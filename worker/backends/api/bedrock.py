"""Amazon Bedrock's ``Rerank`` (Agents for Amazon Bedrock runtime, ``POST /rerank``), for Bedrock's
reranker models (``amazon.rerank-v1:0``, ``cohere.rerank-v3-5:0``). Requests are signed with SigV4
(``aws_auth``), not sent with a key.

One text query, the documents as inline text sources, ``numberOfResults`` = every document; the answer's
``results[{index, relevanceScore}]``. The model is named by its foundation-model ARN in the worker's
region unless the spec gives an ARN. Bedrock reports no usage: it bills per query, where a query is one
request of up to 100 documents (a request of 350 documents is 4 queries), so each request counts
``ceil(documents / 100)`` search units, priced per model in core/prices.toml; the ledger's tokens are the
estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from core.errors import ConfigError
from core.kinds import ProviderLimits
from worker.backends.api.aws_auth import AwsSignature
from worker.backends.api.credentials import RequestAuth
from worker.backends.api.provider import Answer, Provider, scores_by_index

FOUNDATION_MODEL_ARN = "arn:aws:bedrock:{region}::foundation-model/{model}"
DOCUMENTS_PER_QUERY = 100


class BedrockProvider(Provider):
    path = "/rerank"
    score_meaning = "relevanceScore per source (Bedrock Rerank)"

    def served_model(self, model: str, auth: RequestAuth) -> str | None:
        """The model's ARN: as given, or the foundation model's in the region requests are signed for."""
        if model.startswith("arn:"):
            return model
        if model == "default" or not isinstance(auth, AwsSignature):
            raise ConfigError(
                f"Bedrock needs a model id or ARN, e.g. --model bedrock:amazon.rerank-v1:0, not {model!r}"
            )
        return FOUNDATION_MODEL_ARN.format(region=auth.region, model=model)

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {
            "queries": [{"type": "TEXT", "textQuery": {"text": query}}],
            "sources": [
                {"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": text}}}
                for text in texts
            ],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "numberOfResults": len(texts),
                    "modelConfiguration": {"modelArn": model},
                },
            },
        }

    def parse(self, payload: Any, n_texts: int) -> Answer:
        results = payload.get("results") if isinstance(payload, dict) else None
        return Answer(scores=scores_by_index(results, n_texts, "relevanceScore"))

    def estimate_search_units(self, n_texts: int) -> int:
        return math.ceil(n_texts / DOCUMENTS_PER_QUERY)
