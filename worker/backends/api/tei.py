"""Hugging Face text-embeddings-inference (``POST /rerank``): request ``{query, texts, raw_scores,
truncate}``, answer a list of ``{index, score}``.

TEI refuses more texts than its ``--max-client-batch-size`` (32 by default), so that is the default
here. With ``raw_scores: false`` the score is the model's activation per pair (sigmoid for a
single-label cross-encoder), as sentence-transformers' CrossEncoder gives it: absolute, not normalised
across the request. TEI reports no usage, so tokens are the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, scores_by_index


class TeiProvider(Provider):
    path = "/rerank"
    score_meaning = "score per text (TEI /rerank, raw_scores false: the model's activation)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        return {"query": query, "texts": list(texts), "raw_scores": False, "truncate": True}

    def parse(self, payload: Any, n_texts: int) -> Answer:
        return Answer(scores=scores_by_index(payload, n_texts, "score"))
