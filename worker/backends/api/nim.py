"""NVIDIA NIM ranking (``POST /v1/ranking``): request ``{model, query: {text}, passages: [{text}],
truncate}``, answer ``rankings[{index, logit}]`` and, on newer NIMs, ``usage.total_tokens``.

The score is the raw logit per passage. ``truncate: END`` lets NIM cut passages past the model's
maximum length instead of refusing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, Provider, optional_count, scores_by_index


class NimProvider(Provider):
    path = "/v1/ranking"
    score_meaning = "logit per passage (NIM /v1/ranking)"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "query": {"text": query},
            "passages": [{"text": text} for text in texts],
            "truncate": "END",
        }
        if model is not None:
            body["model"] = model
        return body

    def parse(self, payload: Any, n_texts: int) -> Answer:
        rankings = payload.get("rankings") if isinstance(payload, dict) else None
        scores = scores_by_index(rankings, n_texts, "logit")
        return Answer(scores=scores, tokens=optional_count(payload, "usage", "total_tokens"))
