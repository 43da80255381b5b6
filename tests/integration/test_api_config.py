"""The parts of API workers that need no server: rate-limit headers, prices, keys, request plans, specs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.errors import ConfigError, ModelSpecError, PermanentProviderError
from core.kinds import API_KINDS, API_KINDS_TABLE, KINDS, ProviderLimits
from core.model_spec import ModelSpec
from core.pricing import PriceTable, load_price_table
from core.settings import Settings
from testkit.fleet import clean_env, run_script
from tests.api_fixtures import API_KEY
from tests.integration.test_submit_cli import _load_script
from worker.backends.api.credentials import load_credentials
from worker.backends.api.llm_judge import yes_probability
from worker.backends.api.planning import plan_requests
from worker.backends.api.provider import MalformedAnswerError, error_message, scores_by_index
from worker.backends.api.rate_headers import retry_after_seconds
from worker.backends.api.registry import PROVIDERS

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": "Sat, 01 Mar 2025 12:00:07 GMT"}, 7.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "250ms"}, 0.25),
        ({"x-ratelimit-remaining-tokens": "12", "x-ratelimit-reset-tokens": "9s"}, None),
        ({"Retry-After": "2", "retry-after-ms": "4500"}, 4.5),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == seconds


PRICES = """
[[api]]
provider = "cohere"
model = "rerank-v3.5"
since = 2024-12-01
usd_per_search_unit = 0.002

[[api]]
provider = "cohere"
model = "rerank-v3.5"
since = 2025-06-01
usd_per_search_unit = 0.001

[[api]]
provider = "cohere"
model = "*"
since = 2024-01-01
usd_per_search_unit = 0.005

[[gpu]]
gpu = "H100"
since = 2025-01-01
usd_per_hour = 2.5
"""


def test_prices_hold_from_their_date_and_fall_back_to_the_providers_wildcard(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    table = PriceTable.load(path)
    assert table.api_cost("cohere", "rerank-v3.5", date(2025, 1, 15), 0, 0, 10) == pytest.approx(0.02)
    assert table.api_cost("cohere", "rerank-v3.5", date(2025, 6, 1), 0, 0, 10) == pytest.approx(0.01)
    # Before the model's own price holds, the provider's wildcard does; before that, nothing.
    assert table.api_cost("cohere", "rerank-v3.5", date(2024, 6, 1), 0, 0, 10) == pytest.approx(0.05)
    assert table.api_cost("cohere", "rerank-v3.5", date(2023, 6, 1), 0, 0, 10) is None
    assert table.api_cost("cohere", "rerank-english-v3.0", date(2024, 6, 1), 0, 0, 1) == pytest.approx(0.005)
    assert table.api_cost("jina", "anything", date(2025, 1, 1), 1000, 0, 0) is None
    assert [(gpu.gpu, gpu.usd_per_hour) for gpu in table.gpu] == [("H100", 2.5)]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[[api]]\nprovider = "x"\nmodel = "m"\nsince = 2025-01-01\n', "give a usd_per"),
        ('[[api]]\nprovider = "x"\nmodel = "m"\nsince = "yesterday"\nusd_per_search_unit = 1\n', "TOML date"),
        ('[[api]]\nprovider = "x"\nmodel = "m"\nsince = 2025-01-01\nusd_per_token = 1\n', "unknown fields"),
        ('[[api]]\nprovider = "x"\nmodel = "m"\nsince = 2025-01-01\nusd_per_search_unit = -1\n', ">= 0"),
        ("[prices]\n", "unknown sections"),
        ("[[api]\n", "not valid TOML"),
    ],
)
def test_a_bad_price_table_is_refused_with_the_reason(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint):
        PriceTable.load(path)


def test_the_shipped_price_table_loads() -> None:
    table = load_price_table(None)
    assert table.api_price("cohere", "rerank-v3.5", date(2025, 1, 1)) is not None


def test_keys_come_from_the_variable_or_a_file_never_both(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{API_KEY}\n")
    from_file = load_credentials(Settings(voyage_api_key_file=key_file).api("voyage"))
    assert from_file.key is not None and from_file.key.get_secret_value() == API_KEY
    assert API_KEY not in repr(from_file) and API_KEY not in from_file.fingerprint
    assert from_file.scrub(f"token {API_KEY} refused") == "token [redacted] refused"
    with pytest.raises(ConfigError, match="both RERANK_VOYAGE_API_KEY and RERANK_VOYAGE_API_KEY_FILE"):
        load_credentials(Settings(voyage_api_key="k", voyage_api_key_file=key_file).api("voyage"))
    with pytest.raises(ConfigError, match="needs a key: set RERANK_VOYAGE_API_KEY"):
        load_credentials(Settings().api("voyage"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_credentials(Settings(voyage_api_key_file=tmp_path / "missing").api("voyage"))
    keyless = load_credentials(Settings(tei_base_url="http://tei:80").api("tei"))
    other = load_credentials(Settings(tei_base_url="http://tei:81").api("tei"))
    assert keyless.key is None and keyless.headers() == {} and keyless.fingerprint != other.fingerprint


def test_api_settings_come_from_the_variables_of_each_registry_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RERANK_<KIND>_BASE_URL, _API_KEY and _API_KEY_FILE keep their names, the key stays a SecretStr
    and the base URL defaults to the registry's."""
    key_file = tmp_path / "judge-key"
    key_file.write_text("judge-secret\n")
    monkeypatch.setenv("RERANK_OPENAI_RERANK_BASE_URL", "http://rerank:9000")
    monkeypatch.setenv("RERANK_OPENAI_RERANK_API_KEY", API_KEY)
    monkeypatch.setenv("RERANK_LLM_JUDGE_API_KEY_FILE", str(key_file))
    settings = Settings()
    rerank = settings.api("openai-rerank")
    assert rerank.base_url == "http://rerank:9000" and isinstance(rerank.api_key, SecretStr)
    assert rerank.api_key.get_secret_value() == API_KEY and API_KEY not in repr(settings)
    judge = load_credentials(settings.api("llm-judge"))
    assert judge.key is not None and judge.key.get_secret_value() == "judge-secret"
    for entry in API_KINDS_TABLE:
        endpoint = settings.api(entry.kind)
        assert endpoint.requires_key == entry.requires_key == PROVIDERS[entry.kind].requires_key
        assert PROVIDERS[entry.kind].defaults == entry.limits
        if entry.kind != "openai-rerank":
            assert endpoint.base_url == entry.base_url
    assert rerank.variable("api_key_file") == "RERANK_OPENAI_RERANK_API_KEY_FILE"
    assert settings.api("cohere").variable("base_url") == "RERANK_COHERE_BASE_URL"
    with pytest.raises(ModelSpecError, match="'flag' is not an API kind; use one of cohere, jina"):
        settings.api("flag")


def test_requests_carry_one_query_within_the_document_and_token_limits() -> None:
    queries = ["a", "b", "a", "a", "b", "a", "c"]
    texts = ["x" * 40, "y", "z" * 4, "w", "v", "u" * 80, "t"]
    limits = ProviderLimits(max_documents=3, max_tokens_per_document=100, max_tokens_per_request=25)
    provider = PROVIDERS["openai-rerank"]
    plan = plan_requests(queries, texts, limits, lambda q, batch: provider.estimate_request(q, batch, limits))
    assert [(request.query, request.pair_indices) for request in plan] == [
        ("a", (0, 2, 3)),  # 11 + 2 + 2 tokens
        ("a", (5,)),  # 21 tokens: no room left beside the first three
        ("b", (1, 4)),
        ("c", (6,)),
    ]
    assert all(request.estimated_tokens <= 25 for request in plan)
    with pytest.raises(PermanentProviderError, match="pair 0 is estimated at 101 tokens"):
        plan_requests(
            ["q"], ["x" * 400], limits, lambda q, batch: provider.estimate_request(q, batch, limits)
        )


def test_answers_must_score_every_document_exactly_once() -> None:
    assert scores_by_index([{"index": 1, "s": 0.5}, {"index": 0, "s": -2}], 2, "s") == [-2.0, 0.5]
    for bad in (
        [{"index": 0, "s": 1.0}],
        [{"index": 0, "s": 1.0}, {"index": 0, "s": 2.0}],
        [{"index": 0, "s": 1.0}, {"index": 2, "s": 2.0}],
        [{"index": 0, "s": "high"}, {"index": 1, "s": 2.0}],
        {"results": []},
    ):
        with pytest.raises(MalformedAnswerError):
            scores_by_index(bad, 2, "s")


def test_the_judge_score_is_p_yes_over_yes_and_no() -> None:
    import math

    top = [
        {"token": "Yes", "logprob": math.log(0.6)},
        {"token": " no", "logprob": math.log(0.2)},
        {"token": "yes", "logprob": math.log(0.1)},
        {"token": "Maybe", "logprob": math.log(0.1)},
    ]
    assert yes_probability(top) == pytest.approx(0.7 / 0.9)
    assert yes_probability([{"token": "No", "logprob": 0.0}]) == 0.0
    assert yes_probability([{"token": "Perhaps", "logprob": 0.0}]) is None


def test_error_bodies_yield_the_providers_message() -> None:
    assert error_message('{"message": "invalid model"}') == "invalid model"
    assert error_message('{"error": {"message": "quota", "type": "x"}}') == "quota"
    assert (
        error_message('{"detail": [{"loc": ["body"], "msg": "bad"}]}') == '[{"loc": ["body"], "msg": "bad"}]'
    )
    assert error_message("<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"


@pytest.mark.parametrize("kind", list(API_KINDS))
def test_api_kinds_parse_and_keep_their_served_name(kind: str) -> None:
    spec = ModelSpec.parse(f"{kind}:org/model:v1")
    assert (spec.kind, spec.name, spec.is_api, spec.is_local) == (kind, "org/model:v1", True, False)
    assert spec.queue.startswith(f"rerank.{kind}.model-v1.")
    assert kind in KINDS and kind in PROVIDERS


def test_workers_script_takes_the_api_as_a_flag_or_in_the_model() -> None:
    script = _load_script("workers.py")
    for argv in (
        ["--api", "llm-judge", "--model", "llama3:8b"],
        ["--api", "llm-judge", "--model", "llm-judge:llama3:8b"],
        ["--model", "llm-judge:llama3:8b"],
    ):
        assert str(script._model_spec(script.parse_args(argv))) == "llm-judge:llama3:8b"


def test_workers_help_lists_every_api_kind_with_its_defaults_and_variables() -> None:
    help_text = _load_script("workers.py").build_parser().format_help()
    for entry in API_KINDS_TABLE:
        line = next(line for line in help_text.splitlines() if line.startswith(f"  {entry.kind} "))
        assert entry.summary in line and ("key required" in line) == entry.requires_key
        assert f"{entry.limits.max_documents:,} document" in line
        assert (
            f"RERANK_{entry.kind.upper().replace('-', '_')}_BASE_URL (default {entry.base_url})" in help_text
        )
        assert f"RERANK_{entry.kind.upper().replace('-', '_')}_API_KEY_FILE" in help_text


def test_workers_script_refuses_mixed_placement_flags(tmp_path: Path) -> None:
    env = clean_env(data_dir=str(tmp_path / "data"), broker_url="redis://127.0.0.1:1/0")
    api_with_cpu = run_script("workers.py", "--api", "tei", "--model", "default", "--cpu", "1", env=env)
    assert api_with_cpu.returncode == 2 and "drop --gpus/--cpu" in api_with_cpu.stderr
    local_with_concurrency = run_script(
        "workers.py", "--model", "cross-encoder:m", "--concurrency", "4", env=env
    )
    assert local_with_concurrency.returncode == 2 and "for API workers" in local_with_concurrency.stderr
    keyless = run_script("workers.py", "--api", "cohere", "--model", "rerank-v3.5", env=env)
    assert keyless.returncode == 2 and "set RERANK_COHERE_API_KEY" in keyless.stderr
