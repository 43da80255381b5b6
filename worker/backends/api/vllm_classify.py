"""vLLM's classification API (``POST /classify``) over a sequence classifier with graded labels: request
``{model, input}`` with one text per (query, document) pair, joined by the spec's ``template`` (the preset
``plain`` unless set; ``core.pair_template``), answer ``data[{index, label, probs, num_classes}]`` and
``usage``. The score of a pair is the expected label ``sum(p_i * i) / (C - 1)`` of its class
probabilities, or with the option ``label`` the probability of that class (``core.graded_relevance``), as
the local ``classifier`` kind scores the same model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.graded_relevance import graded_scores
from core.kinds import ApiKind, ProviderLimits
from core.model_spec import ModelSpec
from core.pair_template import PairTemplate, pair_template, preset
from worker.backends.api.provider import Answer, MalformedAnswerError, Provider, as_score, optional_count
from worker.backends.api.tokens import estimate_tokens

DEFAULT_TEMPLATE = "plain"


class VllmClassifyProvider(Provider):
    path = "/classify"
    score_meaning = (
        "expected label sum(p_i * i) / (C - 1) of /classify's probs, or P(label) with option label"
    )

    def __init__(self, entry: ApiKind, spec: ModelSpec | None = None) -> None:
        super().__init__(entry, spec)
        self.label = spec.int_option("label", 0) if spec is not None else None
        template = pair_template(spec, DEFAULT_TEMPLATE) if spec is not None else None
        self.template: PairTemplate = template or preset(DEFAULT_TEMPLATE)

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": [self.template.format(query, text) for text in texts]}
        if model is not None:
            body["model"] = model
        return body

    def parse(self, payload: Any, n_texts: int) -> Answer:
        data = payload.get("data") if isinstance(payload, dict) else None
        probabilities = np.array(probabilities_by_index(data, n_texts), dtype=np.float64).reshape(n_texts, -1)
        classes = probabilities.shape[1]
        if self.label is not None and self.label >= classes:
            raise MalformedAnswerError(
                f"option label={self.label} is out of range: the served model has {classes} labels "
                f"(0..{classes - 1})"
            )
        scores = graded_scores(probabilities, self.label)
        return Answer(
            scores=[float(score) for score in scores], tokens=optional_count(payload, "usage", "total_tokens")
        )

    def estimate_request(self, query: str, texts: Sequence[str], limits: ProviderLimits) -> int:
        """Tokens of each joined text, its document counting at most the per-document limit."""
        overhead = estimate_tokens(self.template.format(query, ""))
        return sum(overhead + min(estimate_tokens(text), limits.max_tokens_per_document) for text in texts)


def probabilities_by_index(items: Any, n_texts: int) -> list[list[float]]:
    """The ``probs`` of ``[{"index": i, "probs": [...]}, ...]`` in index order, checked to cover 0..n-1
    once, each with the same number (at least two) of classes."""
    if not isinstance(items, list) or len(items) != n_texts:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise MalformedAnswerError(f"expected {n_texts} classified inputs, got {got}")
    rows: list[list[float] | None] = [None] * n_texts
    for item in items:
        if not isinstance(item, dict):
            raise MalformedAnswerError(f"a result is {type(item).__name__}, not an object")
        index, probs = item.get("index"), item.get("probs")
        if type(index) is not int or not 0 <= index < n_texts or rows[index] is not None:
            raise MalformedAnswerError(f"result index {index!r} is missing, out of range or repeated")
        if not isinstance(probs, list) or len(probs) < 2:
            raise MalformedAnswerError(
                f"result {index} has probs {probs!r}: a graded classifier gives two or more; for a model "
                "with one label use the vllm-score kind"
            )
        rows[index] = [as_score(probability, "probs") for probability in probs]
    widths = {len(row) for row in rows if row is not None}
    if len(widths) != 1:
        raise MalformedAnswerError(f"the results have different numbers of classes: {sorted(widths)}")
    return [row for row in rows if row is not None]
