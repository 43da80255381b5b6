"""The fake servers' dialects of providers that speak a kind's shape with quirks of their own (the provider
table of README.md), and of Amazon Bedrock, whose requests are signed with AWS SigV4 instead of carrying a
key. Each is what the provider's reference documents: its path, its request checks, its answer shape and
where it reports tokens."""

from __future__ import annotations

import hmac
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from testkit.api_dialects import BadRequestError, answer, expected_score, server_tokens

BEDROCK_MAX_SOURCES = 1000
_MODEL_ARN = re.compile(r"arn:aws:bedrock:[a-z0-9-]+::foundation-model/[\w.:-]+")
_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key_id>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class AwsIdentity:
    """The credentials a fake AWS endpoint accepts, and the region and service it is."""

    access_key: str
    secret_key: str
    session_token: str | None
    region: str
    service: str = "bedrock"


def check_sigv4(identity: AwsIdentity, path: str, headers: Mapping[str, str], body: bytes) -> None:
    """Accept a request only with a SigV4 signature of ``identity``'s credentials for its region and
    service over its host, date, content type, security token and body, recomputed with botocore from what
    arrived (``headers``: the request's, names in lower case). Raises ``BadRequestError`` (403, as AWS
    answers) naming what is wrong."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    match = _SIGV4.fullmatch(headers.get("authorization", ""))
    if match is None:
        raise BadRequestError(403, "Authorization is not an AWS4-HMAC-SHA256 signature")
    signed = match["signed"].split(";")
    amz_date = headers.get("x-amz-date", "")
    problems = [
        f"{name} {got!r} is not {wanted!r}"
        for name, got, wanted in (
            ("access key", match["key_id"], identity.access_key),
            ("credential region", match["region"], identity.region),
            ("credential service", match["service"], identity.service),
            ("credential date", match["date"], amz_date[:8]),
        )
        if got != wanted
    ]
    required = ["host", "x-amz-date", "content-type"]
    if identity.session_token is not None:
        required.append("x-amz-security-token")
        if headers.get("x-amz-security-token") != identity.session_token:
            problems.append("the security token is missing or wrong")
    problems += [f"{name} is not signed" for name in required if name not in signed]
    if problems:
        raise BadRequestError(403, "; ".join(problems))
    request = AWSRequest(
        method="POST",
        url=f"http://{headers.get('host')}{path}",
        data=body,
        headers={name: headers.get(name, "") for name in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(identity.access_key, identity.secret_key, identity.session_token),
        identity.service,
        identity.region,
    )
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise BadRequestError(
            403, "The request signature we calculated does not match the signature you provided."
        )


def _bedrock(payload: Any, token_scale: float) -> tuple[Any, int, int]:
    queries = payload.get("queries")
    if not isinstance(queries, list) or len(queries) != 1 or queries[0].get("type") != "TEXT":
        raise BadRequestError(400, "queries must hold exactly one TEXT query")
    query = _text(queries[0].get("textQuery"))
    sources = payload.get("sources")
    if not isinstance(sources, list) or not 1 <= len(sources) <= BEDROCK_MAX_SOURCES:
        raise BadRequestError(400, f"sources must hold 1 to {BEDROCK_MAX_SOURCES} items")
    texts = []
    for source in sources:
        inline = source.get("inlineDocumentSource") if isinstance(source, dict) else None
        if source.get("type") != "INLINE" or not isinstance(inline, dict) or inline.get("type") != "TEXT":
            raise BadRequestError(400, "each source must be an INLINE TEXT document")
        texts.append(_text(inline.get("textDocument")))
    configuration = payload.get("rerankingConfiguration", {})
    bedrock = configuration.get("bedrockRerankingConfiguration", {})
    arn = bedrock.get("modelConfiguration", {}).get("modelArn")
    if configuration.get("type") != "BEDROCK_RERANKING_MODEL" or not _MODEL_ARN.fullmatch(str(arn)):
        raise BadRequestError(
            400, f"rerankingConfiguration needs BEDROCK_RERANKING_MODEL and a model ARN, got {arn!r}"
        )
    wanted = bedrock.get("numberOfResults", len(texts))
    scored = sorted(
        ((i, expected_score(query, text)) for i, text in enumerate(texts)), key=lambda item: -item[1]
    )
    results = [{"index": i, "relevanceScore": s} for i, s in scored[:wanted]]
    return {"results": results}, math.ceil(server_tokens(query, texts) * token_scale), len(texts)


def _text(container: Any) -> str:
    value = container.get("text") if isinstance(container, dict) else None
    if not isinstance(value, str):
        raise BadRequestError(400, "text must be a string")
    return value


def _rerank_v1(reshape: Callable[[Any, list[dict[str, Any]], int], Any], needs_model: bool = False) -> Any:
    """A /v1/rerank dialect: the request checked as /v1/rerank, the answer's results and tokens put where
    this provider puts them by ``reshape(payload, results, tokens)``."""

    def dialect(payload: Any, token_scale: float) -> tuple[Any, int, int]:
        if needs_model and not isinstance(payload.get("model"), str):
            raise BadRequestError(400, "model is required")
        body, tokens, documents = answer("openai-rerank", payload, token_scale)
        results = body["results"]
        random.shuffle(results)
        return reshape(payload, results, tokens), tokens, documents

    return dialect


def _xinference(payload: Any, results: list[dict[str, Any]], tokens: int) -> Any:
    meta = {
        "api_version": None,
        "billed_units": None,
        "tokens": {"input_tokens": tokens, "output_tokens": tokens},
    }
    return {"id": "x-1", "results": [{**r, "document": None} for r in results], "meta": meta}


def _siliconflow(payload: Any, results: list[dict[str, Any]], tokens: int) -> Any:
    return {"id": "sf-1", "results": results, "tokens": {"input_tokens": tokens, "output_tokens": 0}}


def _together(payload: Any, results: list[dict[str, Any]], tokens: int) -> Any:
    usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
    return {"object": "rerank", "id": "t-1", "model": payload["model"], "results": results, "usage": usage}


def _localai(payload: Any, results: list[dict[str, Any]], tokens: int) -> Any:
    usage = {"total_tokens": tokens, "prompt_tokens": tokens}
    return {
        "model": payload["model"],
        "usage": usage,
        "results": [{**r, "document": {"text": ""}} for r in results],
    }


def _jina_like(payload: Any, results: list[dict[str, Any]], tokens: int) -> Any:
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"model": payload.get("model"), "object": "list", "results": results, "usage": usage}


Dialect = Callable[[Any, float], tuple[Any, int, int]]
# flavor: (path, dialect). The README's provider table names each row's flavor in tests.
PROVIDER_DIALECTS: dict[str, tuple[str, Dialect]] = {
    "bedrock": ("/rerank", _bedrock),
    "nvidia": ("/v1/retrieval/nvidia/reranking", lambda payload, scale: answer("nim", payload, scale)),
    "xinference": ("/v1/rerank", _rerank_v1(_xinference, needs_model=True)),
    "localai": ("/v1/rerank", _rerank_v1(_localai, needs_model=True)),
    "gpustack": ("/v1/rerank", _rerank_v1(_jina_like, needs_model=True)),
    "siliconflow": ("/v1/rerank", _rerank_v1(_siliconflow, needs_model=True)),
    "novita": ("/v3/openai/rerank", _rerank_v1(_jina_like, needs_model=True)),
    "gitee": ("/v1/rerank", _rerank_v1(_jina_like, needs_model=True)),
    "302ai": ("/v1/rerank", _rerank_v1(_jina_like, needs_model=True)),
    "together": ("/v1/rerank", _rerank_v1(_together, needs_model=True)),
    "lmstudio": ("/v1/chat/completions", lambda payload, scale: answer("llm-judge", payload, scale)),
}
