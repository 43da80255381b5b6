"""What a hosted rerank API is to the worker: an endpoint path, a request body and a parser for its answer.
One small module per API implements ``Provider``; its kind, default base URL, key requirement and request
limits are declared once, in its ``core.kinds`` entry, which the provider is built with, together with the
model spec it serves (whose options, ``kind:MODEL?name=value``, may shape the requests)."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from core.kinds import ApiKind, ProviderLimits
from core.model_spec import ModelSpec
from worker.backends.api.credentials import RequestAuth
from worker.backends.api.tokens import estimate_tokens


@dataclass(frozen=True)
class Answer:
    """A parsed answer: one absolute score per document, in the order sent, and the usage the provider
    reported (``None`` where it reports none)."""

    scores: list[float]
    tokens: int | None = None
    output_tokens: int = 0
    search_units: int | None = None


class MalformedAnswerError(ValueError):
    """Raised when a 2xx body is not the API's answer (bad JSON, missing or duplicate indices)."""


class Provider(ABC):
    """One API's request and answer shapes. Providers are stateless; one instance serves all threads.
    Subclasses set ``path`` and ``score_meaning``; everything else comes from the registry ``entry`` and,
    for a provider whose kind declares options, the ``spec`` it serves (None: built from the entry
    alone, as the registry's table is; the options are then unset). A subclass that reads options checks
    them in its ``__init__``, so a bad value fails when the worker loads the model."""

    path: ClassVar[str]
    score_meaning: ClassVar[str]

    def __init__(self, entry: ApiKind, spec: ModelSpec | None = None) -> None:
        self.entry = entry

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def defaults(self) -> ProviderLimits:
        """The request limits of the registry entry, before ``RERANK_API_MAX_*`` override them."""
        return self.entry.limits

    @property
    def requires_key(self) -> bool:
        return self.entry.requires_key

    def served_model(self, model: str, auth: RequestAuth) -> str | None:
        """What requests name as the model of spec name ``model``: None for a server's ``default``."""
        return None if model == "default" else model

    @abstractmethod
    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        """The JSON request for ``query`` against ``texts``; ``model`` is None for a served default."""

    @abstractmethod
    def parse(self, payload: Any, n_texts: int) -> Answer:
        """Scores and usage from the decoded JSON answer; raises ``MalformedAnswerError``."""

    def estimate_request(self, query: str, texts: Sequence[str], limits: ProviderLimits) -> int:
        """Tokens the request will count, estimated before sending: every (query, document) pair is
        scored jointly, so the query counts once per document (as Voyage documents its total)."""
        query_tokens = estimate_tokens(query)
        return sum(
            query_tokens + min(estimate_tokens(text), limits.max_tokens_per_document) for text in texts
        )

    def estimate_search_units(self, n_texts: int) -> int:
        """Search units billed for ``n_texts`` documents where the answer does not say (0: the provider
        does not bill in search units)."""
        return 0


def scores_by_index(items: Any, n_texts: int, score_key: str) -> list[float]:
    """Scores from a list of ``{"index": i, score_key: s}`` in any order, checked to cover 0..n-1 once."""
    if not isinstance(items, list) or len(items) != n_texts:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise MalformedAnswerError(f"expected {n_texts} scored documents, got {got}")
    scores: list[float | None] = [None] * n_texts
    for item in items:
        if not isinstance(item, dict):
            raise MalformedAnswerError(f"a result is {type(item).__name__}, not an object")
        index, score = item.get("index"), item.get(score_key)
        if type(index) is not int or not 0 <= index < n_texts or scores[index] is not None:
            raise MalformedAnswerError(f"result index {index!r} is missing, out of range or repeated")
        scores[index] = as_score(score, score_key)
    return [score for score in scores if score is not None]


def as_score(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedAnswerError(f"{name} {value!r} is not a finite number")
    return float(value)


def optional_count(container: Any, *path: str) -> int | None:
    """``container[path[0]][path[1]]...`` as a non-negative int, or None where any step is missing."""
    value = container
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def error_message(body: str, limit: int = 600) -> str:
    """The provider's own explanation from an error body: ``message``, ``detail`` or ``error``."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:limit]
    if isinstance(payload, dict):
        for key in ("message", "detail", "error"):
            value = payload.get(key)
            if isinstance(value, dict) and "message" in value:
                value = value["message"]
            if value:
                return (value if isinstance(value, str) else json.dumps(value))[:limit]
    return json.dumps(payload)[:limit]
