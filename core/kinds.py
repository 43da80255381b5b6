"""The registry of model kinds: every ``--model kind:name`` a worker can host, in one table.

A kind names the module that implements it (imported only when a worker loads the model, so the producer
never imports torch or an HTTP client). Adding a backend or an API provider is its module plus one line
here; the model spec, the workers' help text and the README's tables derive from this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalKind:
    """A model whose weights the worker loads. ``loader`` is ``"module:function"``, called as
    ``function(spec, settings)`` on the compute thread; ``worker/backends/local/pipeline.py`` says how to
    write one."""

    kind: str
    loader: str
    summary: str


@dataclass(frozen=True)
class ApiKind:
    """A hosted or self-hosted rerank API; ``provider`` is ``"module:class"`` of its ``Provider``."""

    kind: str
    provider: str
    summary: str


LOCAL_KINDS_TABLE: tuple[LocalKind, ...] = (
    LocalKind(
        "cross-encoder",
        "worker.backends.local.cross_encoder:load_cross_encoder",
        "sentence-transformers CrossEncoder",
    ),
    LocalKind("flag", "worker.backends.local.flag:load_flag", "FlagEmbedding encoder-only reranker"),
    LocalKind("flag-llm", "worker.backends.local.flag:load_flag", "FlagEmbedding decoder-only LLM reranker"),
    LocalKind(
        "embedding", "worker.backends.local.embedding:load_embedding", "sentence-transformers bi-encoder"
    ),
)

API_KINDS_TABLE: tuple[ApiKind, ...] = (
    ApiKind("cohere", "worker.backends.api.cohere:CohereProvider", "Cohere Rerank v2"),
    ApiKind("jina", "worker.backends.api.rerank_v1:JinaProvider", "Jina Reranker"),
    ApiKind("voyage", "worker.backends.api.voyage:VoyageProvider", "Voyage AI rerank"),
    ApiKind("tei", "worker.backends.api.tei:TeiProvider", "Hugging Face text-embeddings-inference"),
    ApiKind(
        "openai-rerank", "worker.backends.api.rerank_v1:RerankV1Provider", "OpenAI-compatible /v1/rerank"
    ),
    ApiKind("vllm-score", "worker.backends.api.vllm_score:VllmScoreProvider", "vLLM /score"),
    ApiKind("nim", "worker.backends.api.nim:NimProvider", "NVIDIA NIM ranking"),
    ApiKind("llm-judge", "worker.backends.api.llm_judge:LlmJudgeProvider", "chat-completions LLM judge"),
)

LOCAL_KINDS: dict[str, LocalKind] = {entry.kind: entry for entry in LOCAL_KINDS_TABLE}
API_KINDS: dict[str, ApiKind] = {entry.kind: entry for entry in API_KINDS_TABLE}
KINDS: tuple[str, ...] = (*LOCAL_KINDS, *API_KINDS)
