"""An LLM as a pointwise relevance judge over ``POST /v1/chat/completions`` (OpenAI and compatible
servers: vLLM, llama.cpp, Ollama, ...). One pair per request.

The model is asked whether the document is relevant, answers one token, and returns the log-probabilities
of its 20 most likely first tokens (``logprobs: true, top_logprobs: 20``). The score is

    P(yes) / (P(yes) + P(no))

where P(yes) sums the probabilities of the listed tokens that read "yes" once stripped and lower-cased
("Yes", " yes", ...) and P(no) likewise. It is the judge's probability of relevance with the mass it put
on other tokens removed: absolute per pair, comparable across queries and requests, in [0, 1]. (The
log-odds ``log P(yes) - log P(no)`` would rank identically; the probability is easier to read.) A token
missing from the top 20 counts as probability 0; if neither appears, the judge gave no verdict and the
score is 0.5.

With the spec option ``num_classes`` (``llm-judge:MODEL?num_classes=4``) the judge grades the pair
instead, one digit from 0 (not relevant) to C - 1 (perfectly relevant), and the score is the expected
grade ``sum(P(i) * i) / (C - 1)`` (``core.graded_relevance``), with P normalised over the listed tokens
that read "0" .. "C-1" once stripped; no such digit is no verdict, 0.5 again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import ModelSpecError
from core.graded_relevance import expected_grade
from core.kinds import ApiKind, ProviderLimits
from core.model_spec import ModelSpec
from worker.backends.api.provider import Answer, MalformedAnswerError, Provider, as_score, optional_count
from worker.backends.api.tokens import estimate_tokens

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20
SYSTEM_PROMPT = "You judge whether a document is relevant to a search query. Answer with one word: yes or no."
USER_PROMPT = "Query: {query}\n\nDocument: {text}\n\nIs the document relevant to the query? Answer yes or no."
GRADED_SYSTEM_PROMPT = (
    "You grade how relevant a document is to a search query. Answer with one digit from 0 to {top}."
)
GRADED_USER_PROMPT = (
    "Query: {query}\n\nDocument: {text}\n\nHow relevant is the document to the query? Answer with one "
    "digit from 0 (not relevant) to {top} (perfectly relevant)."
)
NO_VERDICT_SCORE = 0.5
# A grade is one token, so at most ten classes ("0" .. "9").
MAX_CLASSES = 10


def judge_messages(query: str, text: str, num_classes: int | None = None) -> list[dict[str, str]]:
    """The chat of one pair: a yes/no question, or with ``num_classes`` a grade 0 .. num_classes - 1."""
    if num_classes is None:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(query=query, text=text)},
        ]
    top = num_classes - 1
    return [
        {"role": "system", "content": GRADED_SYSTEM_PROMPT.format(top=top)},
        {"role": "user", "content": GRADED_USER_PROMPT.format(query=query, text=text, top=top)},
    ]


def token_masses(top_logprobs: list[dict[str, Any]], words: Sequence[str]) -> list[float]:
    """The probability mass of each of ``words`` among the tokens (stripped, lower-cased), 0 if absent."""
    mass = dict.fromkeys(words, 0.0)
    for entry in top_logprobs:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise MalformedAnswerError("a top_logprobs entry has no token")
        word = entry["token"].strip().lower()
        if word in mass:
            mass[word] += math.exp(as_score(entry.get("logprob"), "logprob"))
    return [mass[word] for word in words]


def yes_probability(top_logprobs: list[dict[str, Any]]) -> float | None:
    """P(yes) normalised over yes and no, or None when neither word is among the tokens."""
    yes, no = token_masses(top_logprobs, ("yes", "no"))
    total = yes + no
    return yes / total if total > 0 else None


def graded_relevance(top_logprobs: list[dict[str, Any]], num_classes: int) -> float | None:
    """The expected grade over the digits "0" .. num_classes - 1, scaled to [0, 1]; None when no digit
    is among the tokens."""
    masses = np.array([token_masses(top_logprobs, [str(grade) for grade in range(num_classes)])])
    if masses.sum() <= 0:
        return None
    return float(expected_grade(masses)[0])


class LlmJudgeProvider(Provider):
    path = "/v1/chat/completions"
    score_meaning = (
        "P(yes) / (P(yes) + P(no)) of the judge's first answer token; with num_classes C, the expected "
        "grade sum(P(i) * i) / (C - 1)"
    )

    def __init__(self, entry: ApiKind, spec: ModelSpec | None = None) -> None:
        super().__init__(entry, spec)
        self.num_classes = spec.int_option("num_classes", 2) if spec is not None else None
        if self.num_classes is not None and self.num_classes > MAX_CLASSES:
            raise ModelSpecError(
                f"--model {spec}: option num_classes={self.num_classes} is more than {MAX_CLASSES}; the "
                "judge answers one digit"
            )

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        if len(texts) != 1:
            raise ValueError(f"an LLM judge scores one document per request, got {len(texts)}")
        body: dict[str, Any] = {
            "messages": judge_messages(query, texts[0], self.num_classes),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        if model is not None:
            body["model"] = model
        return body

    def parse(self, payload: Any, n_texts: int) -> Answer:
        try:
            top = payload["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise MalformedAnswerError(
                "no choices[0].logprobs.content[0].top_logprobs in the answer"
            ) from None
        if not isinstance(top, list):
            raise MalformedAnswerError("top_logprobs is not a list")
        if self.num_classes is None:
            score = yes_probability(top)
            if score is None:
                log.warning("the judge put neither 'yes' nor 'no' among its top tokens; scoring the pair 0.5")
        else:
            score = graded_relevance(top, self.num_classes)
            if score is None:
                log.warning(
                    "the judge put no grade 0..%d among its top tokens; scoring the pair 0.5",
                    self.num_classes - 1,
                )
        return Answer(
            scores=[NO_VERDICT_SCORE if score is None else score],
            tokens=optional_count(payload, "usage", "total_tokens"),
            output_tokens=optional_count(payload, "usage", "completion_tokens") or 0,
        )

    def estimate_request(self, query: str, texts: Sequence[str], limits: ProviderLimits) -> int:
        """The prompt's messages at four characters a token each, plus the one answer token."""
        messages = judge_messages(query, texts[0], self.num_classes)
        return sum(estimate_tokens(message["content"]) for message in messages) + 1
