"""Amazon Bedrock's Rerank against a loopback server that recomputes every request's SigV4 signature from
what arrived: the AWS credential chain, the region, the model ARN, billing per query of up to 100
documents, the fleet's budget per key, region and model, and no secret anywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, PermanentProviderError
from core.model_spec import ModelSpec
from core.settings import Settings
from storage.ledger import Ledger, Usage
from testkit import corpora
from testkit.api_servers import FakeRerankServer, Fault, running
from testkit.fleet import clean_env
from testkit.provider_dialects import AwsIdentity
from testkit.services import new_prefix
from tests.api_fixtures import (
    api_reranker,
    assert_scored_once_with_the_apis_score,
    expected_scores,
    pairs,
    score_with_api_workers,
)
from worker.backends import load_reranker
from worker.backends.api import check_api_config

ACCESS_KEY = "AKIAEXAMPLE7QF3Z2M1X"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYz9secret0"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQtoken"
REGION = "eu-central-1"
MODEL = "amazon.rerank-v1:0"
PRICES = """
[[api]]
provider = "bedrock"
model = "amazon.rerank-v1:0"
since = 2020-01-01
usd_per_search_unit = 0.001
"""


def aws_env(**overrides: str) -> dict[str, str]:
    """An AWS chain that holds exactly these credentials: no shared files, no instance metadata."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(overrides)
    return env


@pytest.fixture
def aws_chain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    yield


def bedrock_server(secret: str = SECRET_KEY) -> FakeRerankServer:
    return FakeRerankServer("bedrock", aws=AwsIdentity(ACCESS_KEY, secret, SESSION_TOKEN, REGION))


def bedrock_settings(server: FakeRerankServer, redis_url: str, prefix: str, prices: Path) -> Settings:
    return Settings(
        broker_url=redis_url,
        redis_key_prefix=prefix,
        bedrock_base_url=server.url,
        prices_path=prices,
        api_concurrency=4,
        api_backoff_max_s=0.05,
        api_timeout_s=5.0,
    )


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return path


def test_signed_requests_score_every_pair_once_and_bill_per_hundred_documents(
    aws_chain: None, redis_url: str, redis_prefix: str, prices: Path
) -> None:
    queries, texts = pairs(n_queries=2, docs_per_query=130, seed=4)
    with running(bedrock_server()) as server:
        settings = bedrock_settings(server, redis_url, redis_prefix, prices)
        with api_reranker("bedrock", settings, model=MODEL) as reranker:
            result = reranker.score(queries, texts)
            fingerprint = reranker.sender.credentials.fingerprint
            described = str(reranker.describe())
    np.testing.assert_allclose(result.scores, expected_scores("bedrock", queries, texts), atol=1e-6)
    # One request per query (Bedrock takes 1,000 sources), each of 130 documents: 2 queries billed each.
    assert server.statuses() == Counter({200: 2})
    assert sorted(request.documents for request in server.scored()) == [130, 130]
    assert [record.search_units for record in result.requests] == [2, 2]
    assert sum(record.cost_usd or 0 for record in result.requests) == pytest.approx(4 * 0.001)
    for secret in (SECRET_KEY, SESSION_TOKEN, ACCESS_KEY):
        assert secret not in described and secret not in fingerprint
    assert "bedrock-agent-runtime" not in described  # the loopback URL, not AWS's


def test_the_default_endpoint_and_model_arn_follow_the_region(aws_chain: None) -> None:
    from worker.backends.api import load_auth
    from worker.backends.api.registry import provider_for

    spec = ModelSpec.parse(f"bedrock:{MODEL}")
    provider = provider_for(spec)
    auth = load_auth(spec, provider, Settings())
    assert auth.endpoint_url == f"https://bedrock-agent-runtime.{REGION}.amazonaws.com/rerank"
    assert provider.served_model(MODEL, auth) == f"arn:aws:bedrock:{REGION}::foundation-model/{MODEL}"
    arn = "arn:aws:bedrock:us-west-2::foundation-model/cohere.rerank-v3-5:0"
    assert provider.served_model(arn, auth) == arn
    # One fleet budget per key, region and model.
    other_model = load_auth(ModelSpec.parse("bedrock:cohere.rerank-v3-5:0"), provider, Settings())
    assert other_model.fingerprint != auth.fingerprint


def test_a_wrong_signature_is_refused_and_no_secret_leaks(
    aws_chain: None, redis_url: str, redis_prefix: str, prices: Path
) -> None:
    queries, texts = pairs(n_queries=1, docs_per_query=3, seed=5)
    with running(bedrock_server(secret="not-the-secret")) as server:
        settings = bedrock_settings(server, redis_url, redis_prefix, prices)
        with (
            api_reranker("bedrock", settings, model=MODEL) as reranker,
            pytest.raises(PermanentProviderError, match="signature we calculated does not match") as error,
        ):
            reranker.score(queries, texts)
    assert SECRET_KEY not in str(error.value) and SESSION_TOKEN not in str(error.value)
    # A server that echoes the Authorization header back: the key id is scrubbed from the message.
    with running(bedrock_server()) as server:
        server.inject(Fault("reject"))
        settings = bedrock_settings(server, redis_url, redis_prefix, prices)
        with (
            api_reranker("bedrock", settings, model=MODEL) as reranker,
            pytest.raises(PermanentProviderError) as echoed,
        ):
            reranker.score(queries, texts)
    assert "AWS4-HMAC-SHA256 Credential=[redacted]/" in str(echoed.value)
    assert ACCESS_KEY not in str(echoed.value)


def test_missing_credentials_region_or_a_key_setting_are_named(
    aws_chain: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ModelSpec.parse(f"bedrock:{MODEL}")
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(ConfigError, match="needs an AWS region: set AWS_REGION"):
        check_api_config(spec, Settings())
    monkeypatch.setenv("AWS_REGION", REGION)
    with pytest.raises(ConfigError, match="not a key: unset RERANK_BEDROCK_API_KEY"):
        check_api_config(spec, Settings(bedrock_api_key="x"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="AWS chain has none: set AWS_ACCESS_KEY_ID"):
        load_reranker(spec, Settings(broker_url="redis://127.0.0.1:1/0"))


def test_bedrock_workers_score_a_corpus_end_to_end_with_no_secret_anywhere(
    redis_url: str, tmp_path: Path, prices: Path
) -> None:
    prefix = new_prefix()
    data = tmp_path / "data"
    shared = {"data_dir": str(data), "broker_url": redis_url, "redis_key_prefix": prefix, "heartbeat_s": "1"}
    worker_env = {
        **clean_env(**shared, api_max_documents="5", api_backoff_max_s="0.05", prices_path=str(prices)),
        **aws_env(),
    }
    corpus = corpora.long_corpus(n_queries=6, docs_per_query=7, seed=8)
    corpus_path = corpora.write(corpus, tmp_path / "corpus.parquet")
    out = tmp_path / "scores.parquet"
    spec = ModelSpec.parse(f"bedrock:{MODEL}")
    server = bedrock_server()
    server.inject(Fault("status", status=500))
    with running(server):
        worker_env["RERANK_BEDROCK_BASE_URL"] = server.url
        run = score_with_api_workers(
            ["--api", "bedrock", "--model", MODEL, "--concurrency", "3"],
            spec,
            1,
            worker_env,
            clean_env(**shared),
            corpus_path,
            out,
            redis_url,
            prefix,
            tmp_path / "workers.log",
        )
    assert_scored_once_with_the_apis_score(corpus, out)
    # 6 queries of 7 documents in requests of at most 5: 12 answered requests, plus the injected 500.
    assert server.statuses() == Counter({200: 12, 500: 1})
    assert sum(request.documents for request in server.scored()) == corpus.num_rows

    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    with ledger.session() as session:
        rows = session.query(Usage).where(Usage.run_id == run.run_id, Usage.request_index > 0).all()
    assert Counter(row.outcome for row in rows) == {"ok": 12, "server_error": 1}
    assert sum(row.search_units or 0 for row in rows) == 13  # the 500 may have been billed
    ledger.dispose()

    log = run.log
    assert "injected failure for AWS4-HMAC-SHA256 Credential=[redacted]/" in log
    files = [path for path in [*data.rglob("*"), out] if path.is_file()]
    for secret in (SECRET_KEY, SESSION_TOKEN, ACCESS_KEY):
        raw = secret.encode()
        assert raw not in log.encode() and raw not in (run.submitted.stdout + run.submitted.stderr).encode()
        assert [path for path in files if raw in path.read_bytes()] == []
        assert [value for value in run.redis if raw in value] == []


def test_credentials_and_region_come_from_a_profile(
    aws_chain: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    prices: Path,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name)
    (tmp_path / "credentials").write_text(
        f"[nightly]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        f"aws_session_token = {SESSION_TOKEN}\n"
    )
    (tmp_path / "config").write_text(f"[profile nightly]\nregion = {REGION}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "nightly")
    queries, texts = pairs(n_queries=1, docs_per_query=4, seed=6)
    with running(bedrock_server()) as server:
        settings = bedrock_settings(server, redis_url, redis_prefix, prices)
        with api_reranker("bedrock", settings, model=MODEL) as reranker:
            result = reranker.score(queries, texts)
    np.testing.assert_allclose(result.scores, expected_scores("bedrock", queries, texts), atol=1e-6)
    assert server.statuses() == Counter({200: 1})


def test_credentials_come_from_a_role_served_to_the_container(
    aws_chain: None, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str, prices: Path
) -> None:
    """A task role, as ECS serves it: botocore fetches (and later refreshes) the role's temporary
    credentials from the container credentials endpoint, here a loopback server."""
    import json
    import threading
    from datetime import UTC, datetime, timedelta
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    fetched: list[str] = []

    class RoleCredentials(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            expiration = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = json.dumps(
                {
                    "AccessKeyId": ACCESS_KEY,
                    "SecretAccessKey": SECRET_KEY,
                    "Token": SESSION_TOKEN,
                    "Expiration": expiration,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), RoleCredentials)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{endpoint.server_port}/role")
    queries, texts = pairs(n_queries=1, docs_per_query=4, seed=6)
    try:
        with running(bedrock_server()) as server:
            settings = bedrock_settings(server, redis_url, redis_prefix, prices)
            with api_reranker("bedrock", settings, model=MODEL) as reranker:
                result = reranker.score(queries, texts)
    finally:
        endpoint.shutdown()
        endpoint.server_close()
    np.testing.assert_allclose(result.scores, expected_scores("bedrock", queries, texts), atol=1e-6)
    assert server.statuses() == Counter({200: 1}) and fetched and set(fetched) == {"/role"}


def test_the_fleet_budget_outlives_rotating_temporary_credentials(
    aws_chain: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers holding different temporary keys of one source (a role rotates them) share a budget;
    a long-term key names its own."""
    from worker.backends.api import load_auth
    from worker.backends.api.registry import provider_for

    spec = ModelSpec.parse(f"bedrock:{MODEL}")
    provider = provider_for(spec)
    first = load_auth(spec, provider, Settings()).fingerprint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAOTHERTEMPORARY01")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "another-session-token")
    assert load_auth(spec, provider, Settings()).fingerprint == first
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    long_term = load_auth(spec, provider, Settings()).fingerprint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAANOTHERUSER00001")
    assert len({first, long_term, load_auth(spec, provider, Settings()).fingerprint}) == 3
