"""Which ``Provider`` speaks for each API model kind."""

from __future__ import annotations

from worker.errors import ModelSpecError
from worker.rerankers.api.cohere import CohereProvider
from worker.rerankers.api.llm_judge import LlmJudgeProvider
from worker.rerankers.api.nim import NimProvider
from worker.rerankers.api.provider import Provider
from worker.rerankers.api.rerank_v1 import JinaProvider, RerankV1Provider
from worker.rerankers.api.tei import TeiProvider
from worker.rerankers.api.vllm_score import VllmScoreProvider
from worker.rerankers.api.voyage import VoyageProvider

PROVIDERS: dict[str, Provider] = {
    provider.kind: provider
    for provider in (
        CohereProvider(),
        JinaProvider(),
        VoyageProvider(),
        TeiProvider(),
        RerankV1Provider(),
        VllmScoreProvider(),
        NimProvider(),
        LlmJudgeProvider(),
    )
}


def provider_for(kind: str) -> Provider:
    try:
        return PROVIDERS[kind]
    except KeyError:
        raise ModelSpecError(
            f"no API provider for model kind {kind!r}; use one of {', '.join(PROVIDERS)}"
        ) from None
