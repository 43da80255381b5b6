"""What the fake provider servers (testkit/api_servers.py) say: each API's request shape, checked strictly,
and its answer shape, with deterministic scores and the server's own token count."""

from __future__ import annotations

import hashlib
import math
import random
import re
from typing import Any

PATHS = {
    "cohere": "/v2/rerank",
    "jina": "/v1/rerank",
    "voyage": "/v1/rerank",
    "tei": "/rerank",
    "openai-rerank": "/v1/rerank",
    "vllm-score": "/score",
    "vllm-classify": "/classify",
    "nim": "/v1/ranking",
    "llm-judge": "/v1/chat/completions",
    "dashscope": "/api/v1/services/rerank/text-rerank/text-rerank",
    "qianfan": "/v2/rerankers",
}
DASHSCOPE_MAX_DOCUMENTS = 500
QIANFAN_MAX_DOCUMENTS = 64
TEI_MAX_CLIENT_BATCH = 32
_JUDGE_PROMPT = re.compile(
    r"Query: (.*)\n\nDocument: (.*)\n\n(?:Is the document relevant|How relevant is the document)", re.DOTALL
)
_JUDGE_GRADES = re.compile(r"from 0 \(not relevant\) to (\d) \(perfectly relevant\)")
# The "plain" template of core.pair_template, which vllm-classify sends unless told otherwise.
_PLAIN_PAIR = re.compile(r"query: (.*?) document: (.*)", re.DOTALL)
CLASSIFY_LABELS = 4
# The share of a graded answer's probability spread evenly over all grades, so none is zero.
_GRADE_SMOOTHING = 0.1


class BadRequestError(Exception):
    """The request does not have the API's shape; answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def expected_score(query: str, text: str) -> float:
    """Share of the query's words found in the text, plus a hash-derived hundredth that breaks ties."""
    query_words = set(query.lower().split())
    overlap = len(query_words & set(text.lower().split())) / len(query_words) if query_words else 0.0
    digest = hashlib.blake2b(f"{query}\0{text}".encode(), digest_size=4).digest()
    return overlap + int.from_bytes(digest, "big") / 2**32 / 100


def expected_judge_probability(query: str, text: str) -> float:
    return 0.05 + 0.9 * min(1.0, expected_score(query, text))


def graded_probabilities(expected: float, classes: int) -> list[float]:
    """Probabilities of grades 0 .. classes - 1 whose expected grade / (classes - 1) is ``expected`` (in
    [0.05, 0.95]): two neighbouring grades, smoothed over all of them."""
    w = _GRADE_SMOOTHING
    position = min(max((expected - w / 2) / (1 - w), 0.0), 1.0) * (classes - 1)
    low = min(int(position), classes - 2)
    high_share = position - low
    probabilities = [w / classes] * classes
    probabilities[low] += (1 - w) * (1 - high_share)
    probabilities[low + 1] += (1 - w) * high_share
    return probabilities


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def server_tokens(query: str, texts: list[str]) -> int:
    """How the fake provider counts a rerank request: every (query, document) pair in full."""
    return sum(text_tokens(query) + text_tokens(text) for text in texts)


def answer(flavor: str, payload: Any, token_scale: float) -> tuple[Any, int, int]:
    """The answer body to ``payload``, the tokens the server counts, and the documents it scored.
    Raises ``BadRequestError`` for a request the real API would refuse."""
    if flavor == "llm-judge":
        return _judge(payload, token_scale)
    if flavor == "vllm-classify":
        return _classify(payload, token_scale)
    if flavor == "tei":
        query, texts = _string(payload, "query"), _strings(payload, "texts")
        if not isinstance(payload.get("raw_scores"), bool):
            raise BadRequestError(422, "raw_scores must be a boolean")
        if len(texts) > TEI_MAX_CLIENT_BATCH:
            raise BadRequestError(422, f"batch size {len(texts)} > maximum allowed batch size 32")
    elif flavor == "vllm-score":
        query, texts = _string(payload, "text_1"), _strings(payload, "text_2")
    elif flavor == "dashscope":
        _string(payload, "model")
        query, texts = _string(payload.get("input"), "query"), _strings(payload.get("input"), "documents")
        if len(texts) > DASHSCOPE_MAX_DOCUMENTS:
            raise BadRequestError(400, f"InvalidParameter: documents exceed {DASHSCOPE_MAX_DOCUMENTS}")
    elif flavor == "qianfan":
        _string(payload, "model")
        query, texts = _string(payload, "query"), _strings(payload, "documents")
        if not texts or len(texts) > QIANFAN_MAX_DOCUMENTS or not all(texts):
            raise BadRequestError(400, f"documents must hold 1 to {QIANFAN_MAX_DOCUMENTS} non-empty texts")
    elif flavor == "nim":
        query = _string(payload.get("query"), "text")
        passages = payload.get("passages")
        if not isinstance(passages, list):
            raise BadRequestError(422, "passages must be a list")
        texts = [_string(passage, "text") for passage in passages]
    else:
        query, texts = _string(payload, "query"), _strings(payload, "documents")
        if flavor in ("cohere", "voyage") and not isinstance(payload.get("model"), str):
            raise BadRequestError(400, "model is required")
    tokens = math.ceil(server_tokens(query, texts) * token_scale)
    scored = [(index, expected_score(query, text)) for index, text in enumerate(texts)]
    random.shuffle(scored)
    return _shape(flavor, payload, scored, tokens), tokens, len(texts)


def _shape(flavor: str, payload: Any, scored: list[tuple[int, float]], tokens: int) -> Any:
    if flavor == "cohere":
        results = [{"index": i, "relevance_score": s} for i, s in scored]
        units = math.ceil(len(scored) / 100)
        return {"id": "x", "results": results, "meta": {"billed_units": {"search_units": units}}}
    if flavor == "voyage":
        data = [{"index": i, "relevance_score": s} for i, s in scored]
        return {"object": "list", "data": data, "model": payload["model"], "usage": {"total_tokens": tokens}}
    if flavor == "tei":
        return [{"index": i, "score": s} for i, s in scored]
    if flavor == "vllm-score":
        data = [{"index": i, "object": "score", "score": s} for i, s in scored]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        return {"id": "score-1", "object": "list", "created": 0, "model": "m", "data": data, "usage": usage}
    if flavor == "dashscope":
        top_n = payload.get("parameters", {}).get("top_n")
        ranked = sorted(scored, key=lambda item: -item[1])[: top_n if isinstance(top_n, int) else None]
        results = [{"index": i, "relevance_score": s} for i, s in ranked]
        return {"output": {"results": results}, "usage": {"total_tokens": tokens}, "request_id": "r-1"}
    if flavor == "qianfan":
        listed = [{"index": i, "relevance_score": s, "document": ""} for i, s in scored]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"id": "as-1", "object": "rerank_list", "created": 0, "results": listed, "usage": usage}
    if flavor == "nim":
        rankings = [{"index": i, "logit": s} for i, s in sorted(scored, key=lambda item: -item[1])]
        return {"rankings": rankings, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    top_n = payload.get("top_n")
    ranked = sorted(scored, key=lambda item: -item[1])[: top_n if isinstance(top_n, int) else None]
    results = [{"index": i, "relevance_score": s} for i, s in ranked]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"id": "rerank-1", "model": payload.get("model", "served"), "results": results, "usage": usage}


def _judge(payload: Any, token_scale: float) -> tuple[Any, int, int]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or payload.get("logprobs") is not True:
        raise BadRequestError(400, "messages and logprobs: true are required")
    if not isinstance(payload.get("top_logprobs"), int):
        raise BadRequestError(400, "top_logprobs must be an integer")
    contents = [_string(message, "content") for message in messages]
    match = _JUDGE_PROMPT.search(contents[-1])
    if match is None:
        raise BadRequestError(400, "cannot find the query and document in the prompt")
    p = expected_judge_probability(match.group(1), match.group(2))
    grades = _JUDGE_GRADES.search(contents[-1])
    if grades is not None:
        return _graded_judge(p, int(grades.group(1)) + 1, contents, token_scale)
    # The verdict's mass is spread over spellings, as real tokenizers do.
    top = [
        {"token": "Yes", "logprob": math.log(p * 0.9)},
        {"token": "No", "logprob": math.log((1 - p) * 0.9)},
        {"token": " yes", "logprob": math.log(p * 0.05)},
        {"token": " no", "logprob": math.log((1 - p) * 0.05)},
        {"token": "Maybe", "logprob": math.log(0.05)},
    ]
    prompt_tokens = math.ceil(sum(text_tokens(content) for content in contents) * token_scale)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "Yes" if p >= 0.5 else "No"},
        "logprobs": {"content": [{"token": top[0]["token"], "logprob": -0.1, "top_logprobs": top}]},
        "finish_reason": "length",
    }
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": usage}
    return body, prompt_tokens + 1, 1


def _graded_judge(
    expected: float, classes: int, contents: list[str], token_scale: float
) -> tuple[Any, int, int]:
    """A graded verdict whose digits' expected grade is ``expected``; a non-digit and a digit past the
    top grade take some mass too, which a judge must leave out."""
    top: list[dict[str, Any]] = []
    for grade, probability in enumerate(graded_probabilities(expected, classes)):
        top.append({"token": str(grade), "logprob": math.log(probability * 0.9)})
        top.append({"token": f" {grade}", "logprob": math.log(probability * 0.05)})
    top.append({"token": "Maybe", "logprob": math.log(0.04)})
    if classes < 10:
        top.append({"token": str(classes), "logprob": math.log(0.01)})
    top.sort(key=lambda entry: -entry["logprob"])
    prompt_tokens = math.ceil(sum(text_tokens(content) for content in contents) * token_scale)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": top[0]["token"]},
        "logprobs": {
            "content": [{"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]
        },
        "finish_reason": "length",
    }
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": usage}
    return body, prompt_tokens + 1, 1


def _classify(payload: Any, token_scale: float) -> tuple[Any, int, int]:
    """vLLM's /classify over inputs joined by the "plain" template: probabilities of
    ``CLASSIFY_LABELS`` grades whose expected grade is ``expected_judge_probability`` of the pair."""
    texts = _strings(payload, "input")
    data = []
    for index, text in enumerate(texts):
        match = _PLAIN_PAIR.fullmatch(text)
        if match is None:
            raise BadRequestError(400, f"input {index} is not 'query: ... document: ...'")
        probs = graded_probabilities(
            expected_judge_probability(match.group(1), match.group(2)), CLASSIFY_LABELS
        )
        label = max(range(CLASSIFY_LABELS), key=probs.__getitem__)
        data.append(
            {"index": index, "label": f"LABEL_{label}", "probs": probs, "num_classes": CLASSIFY_LABELS}
        )
    random.shuffle(data)
    tokens = math.ceil(sum(text_tokens(text) for text in texts) * token_scale)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    body = {"id": "classify-1", "object": "list", "created": 0, "model": "m", "data": data, "usage": usage}
    return body, tokens, len(texts)


def _string(container: Any, key: str) -> str:
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, str):
        raise BadRequestError(422, f"{key} must be a string")
    return value


def _strings(container: Any, key: str) -> list[str]:
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequestError(422, f"{key} must be a list of strings")
    return value
