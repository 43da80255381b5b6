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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from core.kinds import ProviderLimits
from worker.backends.api.provider import Answer, MalformedAnswerError, Provider, as_score, optional_count
from worker.backends.api.tokens import estimate_tokens

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20
SYSTEM_PROMPT = "You judge whether a document is relevant to a search query. Answer with one word: yes or no."
USER_PROMPT = "Query: {query}\n\nDocument: {text}\n\nIs the document relevant to the query? Answer yes or no."
NO_VERDICT_SCORE = 0.5


def judge_messages(query: str, text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT.format(query=query, text=text)},
    ]


def yes_probability(top_logprobs: list[dict[str, Any]]) -> float | None:
    """P(yes) normalised over yes and no, or None when neither word is among the tokens."""
    mass = {"yes": 0.0, "no": 0.0}
    for entry in top_logprobs:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise MalformedAnswerError("a top_logprobs entry has no token")
        word = entry["token"].strip().lower()
        if word in mass:
            mass[word] += math.exp(as_score(entry.get("logprob"), "logprob"))
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else None


class LlmJudgeProvider(Provider):
    path = "/v1/chat/completions"
    score_meaning = "P(yes) / (P(yes) + P(no)) of the judge's first answer token"

    def body(
        self, model: str | None, query: str, texts: Sequence[str], limits: ProviderLimits
    ) -> dict[str, Any]:
        if len(texts) != 1:
            raise ValueError(f"an LLM judge scores one document per request, got {len(texts)}")
        body: dict[str, Any] = {
            "messages": judge_messages(query, texts[0]),
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
        probability = yes_probability(top)
        if probability is None:
            log.warning("the judge put neither 'yes' nor 'no' among its top tokens; scoring the pair 0.5")
            probability = NO_VERDICT_SCORE
        return Answer(
            scores=[probability],
            tokens=optional_count(payload, "usage", "total_tokens"),
            output_tokens=optional_count(payload, "usage", "completion_tokens") or 0,
        )

    def estimate_request(self, query: str, texts: Sequence[str], limits: ProviderLimits) -> int:
        """The prompt's messages at four characters a token each, plus the one answer token."""
        return sum(estimate_tokens(message["content"]) for message in judge_messages(query, texts[0])) + 1
