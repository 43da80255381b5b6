"""vLLM's score API (``POST /score``): request ``{model, text_1, text_2}`` with the query as ``text_1``
and the documents as the list ``text_2``; answer ``data[{index, score}]`` and ``usage``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class VllmScoreProvider(Provider):
    path = "/score"
    score_meaning = "score per text_2 (vLLM /score)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"text_1": query, "text_2": list(texts)}
        if model is not None:
            body["model"] = model
        return body

    def parse(self, payload: Any, n_texts: int) -> Answer:
        data = payload.get("data") if isinstance(payload, dict) else None
        scores = scores_by_index(data, n_texts, "score")
        tokens = optional_count(payload, "usage", "total_tokens")
        return Answer(scores=scores, tokens=tokens)
