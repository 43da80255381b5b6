"""Which ``Provider`` speaks for each API model kind."""

from __future__ import annotations

from core.errors import ModelSpecError
from worker.backends.api.cohere import CohereProvider
from worker.backends.api.llm_judge import LlmJudgeProvider
from worker.backends.api.nim import NimProvider
from worker.backends.api.provider import Provider
from worker.backends.api.rerank_v1 import JinaProvider, RerankV1Provider
from worker.backends.api.tei import TeiProvider
from worker.backends.api.vllm_score import VllmScoreProvider
from worker.backends.api.voyage import VoyageProvider

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
