"""README's provider table, row by row: each provider's base URL and path, set as the row says, reach a
loopback server that speaks that provider's request and answer shape and authentication, and every pair
comes back with the provider's score and the tokens it reported."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from core.kinds import API_KINDS
from core.settings import Settings, api_field_name
from testkit.api_servers import FakeRerankServer, running
from testkit.provider_dialects import AwsIdentity
from tests.acceptance.test_docs import readme_table
from tests.api_fixtures import API_KEY, api_reranker, expected_scores, pairs
from tests.integration.test_api_bedrock import ACCESS_KEY, REGION, SECRET_KEY, SESSION_TOKEN, aws_env
from worker.backends.api.registry import PROVIDERS

# The dialect each row's provider speaks on the fake server (testkit/api_dialects.py, provider_dialects.py).
FLAVORS = {
    "Jina": "jina",
    "Cohere": "cohere",
    "Voyage AI": "voyage",
    "NVIDIA (API catalog)": "nvidia",
    "Hugging Face TEI": "tei",
    "OpenAI-API-compatible, vLLM": "openai-rerank",
    "Xinference": "xinference",
    "LocalAI": "localai",
    "GPUStack": "gpustack",
    "SiliconFlow": "siliconflow",
    "Novita AI": "novita",
    "Gitee AI": "gitee",
    "302.AI": "302ai",
    "Together AI": "together",
    "LM Studio": "lmstudio",
    "Tongyi-Qianwen (`QWenRerank`)": "dashscope",
    "BaiduYiyan (`BaiduYiyanRerank`)": "qianfan",
    "Amazon Bedrock (`AWSBedrockReranker`)": "bedrock",
}
# Providers the issue names; each must have a row.
NAMED = (
    "LocalAI",
    "Xinference",
    "GPUStack",
    "SiliconFlow",
    "Novita",
    "Gitee",
    "302.AI",
    "Together",
    "LM Studio",
)
ROWS = readme_table("| provider | kind | base URL | path |")
# Flavors whose servers report tokens the client must record (the others report none, or search units).
REPORTS_TOKENS = {"xinference", "localai", "gpustack", "siliconflow", "novita", "gitee", "302ai", "together"}


def test_the_table_names_every_provider_once() -> None:
    providers = [row[0] for row in ROWS]
    assert sorted(providers) == sorted(FLAVORS)
    for name in NAMED:
        assert any(name in provider for provider in providers), name


@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_each_provider_row_scores_through_its_kind(
    row: list[str], redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    provider, kind_cell, base_url, path_cell, authentication, _quirks = row
    kind, path = kind_cell.strip("`"), path_cell.strip("`")
    assert kind in API_KINDS
    flavor = FLAVORS[provider]
    needs_key = authentication.startswith("key")
    if kind == "bedrock":
        for name, value in aws_env().items():
            monkeypatch.setenv(name, value)
        server = FakeRerankServer(flavor, aws=AwsIdentity(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, REGION))
    else:
        server = FakeRerankServer(flavor, api_key=API_KEY if needs_key else None)
    queries, texts = pairs(n_queries=3, docs_per_query=5, seed=7)
    with running(server):
        assert server.path == path, f"{provider}: the README's path is not the provider's"
        # The base URL's own path part, if any, stays in front of the endpoint path ("your server": none).
        documented = base_url.strip("`").replace("{region}", REGION)
        base = server.url + (urlsplit(documented).path.rstrip("/") if documented.startswith("http") else "")
        values: dict[str, object] = {
            "broker_url": redis_url,
            "redis_key_prefix": redis_prefix,
            "api_backoff_max_s": 0.05,
            "api_max_documents": 4,
            api_field_name(kind, "base_url"): base,
        }
        if needs_key:
            values[api_field_name(kind, "api_key")] = API_KEY
        if path != PROVIDERS[kind].path:
            values[api_field_name(kind, "path")] = path
        model = "amazon.rerank-v1:0" if kind == "bedrock" else "m1"
        with api_reranker(kind, Settings(**values), model=model) as reranker:
            result = reranker.score(queries, texts)
    np.testing.assert_allclose(
        result.scores, expected_scores(kind, queries, texts), atol=1e-6, err_msg=provider
    )
    assert server.statuses() == {200: len(texts) if kind == "llm-judge" else 6}
    assert sum(request.documents for request in server.scored()) == len(texts)
    if flavor in REPORTS_TOKENS:
        assert sorted(record.tokens for record in result.requests) == sorted(
            r.tokens for r in server.scored()
        )
