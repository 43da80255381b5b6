"""The registry of model kinds: every ``--model kind:name`` a worker can host, in one table.

A kind names the module that implements it (imported only when a worker loads the model, so the producer
never imports torch or an HTTP client). Adding a backend or an API provider is its module plus one entry
here; the model spec, the settings of API kinds (base URL, key, key file), the workers' help text, the key
check and the request limits derive from this table, and tests/acceptance/test_docs.py holds the README's
tables to it.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import ConfigError

# What a kind's raw score is. "logit": unbounded, a sigmoid turns it into a probability; "probability":
# already in [0, 1], never squashed again; "similarity": a bi-encoder's cosine; "score": unbounded and no
# logit; "activation": the loaded model's own activation decides (a sentence-transformers CrossEncoder
# applies Sigmoid or Identity), and each scores file records which (its "activation" metadata).
ScoreScale = Literal["logit", "probability", "similarity", "score", "activation"]


@dataclass(frozen=True)
class LocalKind:
    """A model whose weights the worker loads. ``loader`` is ``"module:function"``, called as
    ``function(spec, settings)`` on the compute thread; ``worker/backends/local/pipeline.py`` says how to
    write one. ``options``: the names a model spec of this kind may set (``kind:PATH?name=value``)."""

    kind: str
    loader: str
    summary: str
    score_scale: ScoreScale
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderLimits:
    """How much one API request may carry: documents, tokens one document counts (the most the token
    estimate gives it; APIs truncate longer ones) and, where the API caps it, tokens in all (counted as
    ``Provider.estimate_request`` counts)."""

    max_documents: int
    max_tokens_per_document: int
    max_tokens_per_request: int | None = None

    def __post_init__(self) -> None:
        caps = [self.max_documents, self.max_tokens_per_document]
        if self.max_tokens_per_request is not None:
            caps.append(self.max_tokens_per_request)
        if min(caps) < 1:
            raise ValueError(f"request limits must be at least 1, got {self}")


# An API kind becomes part of variable names (RERANK_OPENAI_RERANK_API_KEY), so it is a plain slug.
_API_KIND_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@dataclass(frozen=True)
class ApiKind:
    """A hosted or self-hosted rerank API, declared once. ``provider`` is ``"module:Class"`` of its
    ``Provider`` (the request and answer shapes); the rest is what the settings (``RERANK_<KIND>_BASE_URL``,
    ``_PATH``, ``_API_KEY``, ``_API_KEY_FILE``), ``workers.py --help``, the key check and the request
    planner derive: the ``base_url`` the endpoint path is appended to unless the settings say otherwise,
    whether the API ``requires_key``, and the request ``limits`` unless ``RERANK_API_MAX_*`` override
    them. ``options``: the names a model spec of this kind may set (``kind:MODEL?name=value``).
    ``aws_signing_service``: requests are signed with AWS SigV4 for this service (credentials and region
    from the AWS chain) instead of carrying a key; a ``{region}`` in ``base_url`` is the region."""

    kind: str
    provider: str
    summary: str
    base_url: str
    limits: ProviderLimits
    score_scale: ScoreScale
    requires_key: bool = False
    options: tuple[str, ...] = ()
    aws_signing_service: str | None = None

    def __post_init__(self) -> None:
        if not _API_KIND_NAME.fullmatch(self.kind):
            raise ValueError(
                f"API kind {self.kind!r} must be lower-case letters and digits, words joined by '-' "
                "(it becomes RERANK_<KIND>_* variable names)"
            )
        module, _, attribute = self.provider.partition(":")
        if not module or not attribute:
            raise ValueError(f"API kind {self.kind!r}: provider {self.provider!r} must be 'module:Class'")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"API kind {self.kind!r}: base_url {self.base_url!r} must be an http(s) URL")


LOCAL_KINDS_TABLE: tuple[LocalKind, ...] = (
    LocalKind(
        "cross-encoder",
        "worker.backends.local.cross_encoder:load_cross_encoder",
        "sentence-transformers CrossEncoder",
        "activation",
    ),
    LocalKind(
        "classifier",
        "worker.backends.local.classifier:load_classifier",
        "transformers sequence classifier with graded labels",
        "probability",
        options=("label", "template"),
    ),
    LocalKind("flag", "worker.backends.local.flag:load_flag", "FlagEmbedding encoder-only reranker", "logit"),
    LocalKind(
        "flag-llm", "worker.backends.local.flag:load_flag", "FlagEmbedding decoder-only LLM reranker", "logit"
    ),
    LocalKind(
        "flag-layerwise",
        "worker.backends.local.flag_cutoff:load_flag_layerwise",
        "FlagEmbedding layerwise LLM reranker, scored at one cutoff layer",
        "logit",
        options=("cutoff_layers",),
    ),
    LocalKind(
        "flag-lightweight",
        "worker.backends.local.flag_cutoff:load_flag_lightweight",
        "FlagEmbedding lightweight LLM reranker (token compression, cutoff layer)",
        "logit",
        options=("cutoff_layers", "compress_ratio", "compress_layers"),
    ),
    LocalKind(
        "embedding",
        "worker.backends.local.embedding:load_embedding",
        "sentence-transformers bi-encoder",
        "similarity",
    ),
    LocalKind(
        "causal-lm",
        "worker.backends.local.causal_lm:load_causal_lm",
        "causal-LM yes/no reranker (Qwen3-Reranker, mxbai-rerank-v2): P(yes) of the next token",
        "probability",
        options=("template", "instruction", "yes_token", "no_token"),
    ),
    LocalKind(
        "null",
        "worker.backends.local.null_scorer:load_null",
        "no model: a hash of the pair, to measure the worker machinery",
        "score",
        options=("pairs_per_s",),
    ),
)

API_KINDS_TABLE: tuple[ApiKind, ...] = (
    ApiKind(
        "cohere",
        "worker.backends.api.cohere:CohereProvider",
        "Cohere Rerank v2",
        base_url="https://api.cohere.com",
        requires_key=True,
        # Cohere recommends at most 1,000 documents a request; 4,096 is its own max_tokens_per_doc.
        limits=ProviderLimits(max_documents=1000, max_tokens_per_document=4096),
        score_scale="probability",
    ),
    ApiKind(
        "jina",
        "worker.backends.api.rerank_v1:JinaProvider",
        "Jina Reranker",
        base_url="https://api.jina.ai",
        requires_key=True,
        limits=ProviderLimits(max_documents=100, max_tokens_per_document=8192),
        score_scale="probability",
    ),
    ApiKind(
        "voyage",
        "worker.backends.api.voyage:VoyageProvider",
        "Voyage AI rerank",
        base_url="https://api.voyageai.com",
        requires_key=True,
        # Voyage's published limits for rerank-2.5 (see worker/backends/api/voyage.py).
        limits=ProviderLimits(
            max_documents=1000, max_tokens_per_document=32000, max_tokens_per_request=600_000
        ),
        score_scale="probability",
    ),
    ApiKind(
        "tei",
        "worker.backends.api.tei:TeiProvider",
        "Hugging Face text-embeddings-inference",
        base_url="http://127.0.0.1:8080",
        # TEI refuses more texts than its --max-client-batch-size, 32 by default.
        limits=ProviderLimits(max_documents=32, max_tokens_per_document=512),
        score_scale="probability",
    ),
    ApiKind(
        "openai-rerank",
        "worker.backends.api.rerank_v1:RerankV1Provider",
        "OpenAI-compatible /v1/rerank",
        base_url="http://127.0.0.1:8000",
        # These servers publish no documents-a-request limit; 100 keeps requests small.
        limits=ProviderLimits(max_documents=100, max_tokens_per_document=8192),
        score_scale="probability",
    ),
    ApiKind(
        "vllm-score",
        "worker.backends.api.vllm_score:VllmScoreProvider",
        "vLLM /score",
        base_url="http://127.0.0.1:8000",
        # vLLM publishes no per-request limit; 100 keeps requests small.
        limits=ProviderLimits(max_documents=100, max_tokens_per_document=8192),
        score_scale="probability",
    ),
    ApiKind(
        "vllm-classify",
        "worker.backends.api.vllm_classify:VllmClassifyProvider",
        "vLLM /classify",
        base_url="http://127.0.0.1:8000",
        # vLLM publishes no per-request limit; 100 keeps requests small.
        limits=ProviderLimits(max_documents=100, max_tokens_per_document=8192),
        score_scale="probability",
        options=("label", "template"),
    ),
    ApiKind(
        "nim",
        "worker.backends.api.nim:NimProvider",
        "NVIDIA NIM ranking",
        base_url="http://127.0.0.1:8000",
        # NIM's reference states no passages-a-request limit; 100 keeps requests small.
        limits=ProviderLimits(max_documents=100, max_tokens_per_document=512),
        score_scale="logit",
    ),
    ApiKind(
        "llm-judge",
        "worker.backends.api.llm_judge:LlmJudgeProvider",
        "chat-completions LLM judge",
        base_url="https://api.openai.com",
        # The judge scores one pair a request.
        limits=ProviderLimits(max_documents=1, max_tokens_per_document=8192),
        score_scale="probability",
        options=("num_classes",),
    ),
    ApiKind(
        "bedrock",
        "worker.backends.api.bedrock:BedrockProvider",
        "Amazon Bedrock Rerank",
        base_url="https://bedrock-agent-runtime.{region}.amazonaws.com",
        # Bedrock takes up to 1,000 sources a request; Cohere Rerank 3.5 reads 4,096 tokens of each.
        limits=ProviderLimits(max_documents=1000, max_tokens_per_document=4096),
        score_scale="probability",
        aws_signing_service="bedrock",
    ),
    ApiKind(
        "dashscope",
        "worker.backends.api.dashscope:DashScopeProvider",
        "Alibaba Cloud DashScope text rerank",
        base_url="https://dashscope.aliyuncs.com",
        requires_key=True,
        # DashScope's published limits for gte-rerank-v2 (see worker/backends/api/dashscope.py).
        limits=ProviderLimits(max_documents=500, max_tokens_per_document=4000, max_tokens_per_request=30_000),
        score_scale="probability",
    ),
    ApiKind(
        "qianfan",
        "worker.backends.api.qianfan:QianfanProvider",
        "Baidu Qianfan rerankers (v2)",
        base_url="https://qianfan.baidubce.com",
        requires_key=True,
        # Qianfan's published limits for bce-reranker-base (see worker/backends/api/qianfan.py).
        limits=ProviderLimits(max_documents=64, max_tokens_per_document=1024),
        score_scale="probability",
    ),
)

LOCAL_KINDS: dict[str, LocalKind] = {entry.kind: entry for entry in LOCAL_KINDS_TABLE}
API_KINDS: dict[str, ApiKind] = {entry.kind: entry for entry in API_KINDS_TABLE}
KINDS: tuple[str, ...] = (*LOCAL_KINDS, *API_KINDS)


def kind_entry(kind: str) -> LocalKind | ApiKind:
    """The registry entry of ``kind`` (one of ``KINDS``), local or API."""
    return LOCAL_KINDS[kind] if kind in LOCAL_KINDS else API_KINDS[kind]


def resolve(kind: str, role: str, reference: str) -> Any:
    """What a registry reference ``module:attribute`` names (the ``role`` of ``kind``: its loader or
    provider), imported now. Raises ``ConfigError`` naming the entry when it cannot be imported."""
    module_name, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"model kind {kind!r} names {role} {reference!r}, which cannot be imported ({exc}); fix its "
            "entry in core/kinds.py"
        ) from None
