"""API-backed rerankers, one per API kind of ``core.kinds`` (hosted rerank APIs, self-hosted rerank servers
and an LLM judge), all over httpx, under rate limits the whole fleet shares through Redis."""

from __future__ import annotations

import logging

import httpx
import redis

from core.broker.url import connect, redact
from core.errors import BrokerError, ConfigError
from core.kinds import API_KINDS, ProviderLimits
from core.model_spec import ModelSpec
from core.pricing import load_price_table
from core.settings import Settings
from worker.backends.api.aws_auth import load_aws_signature
from worker.backends.api.credentials import RequestAuth, load_credentials
from worker.backends.api.provider import Provider
from worker.backends.api.rate_limiter import FleetRateLimiter, RateLimits
from worker.backends.api.registry import provider_for
from worker.backends.api.reranker import ApiReranker
from worker.backends.api.sender import RequestSender, RetryPolicy


def load_api_reranker(spec: ModelSpec, settings: Settings) -> ApiReranker:
    """The reranker for API model ``spec``: its key, limits, price table, HTTP client and the fleet's
    rate limiter. Raises ``ConfigError`` for a missing key or a bad price table, ``BrokerError`` when
    the Redis that holds the shared budget does not answer."""
    provider = provider_for(spec)
    credentials = load_auth(spec, provider, settings)
    limits = _limits(provider.defaults, settings)
    broker_url = settings.resolved_broker_url
    if broker_url is None:
        raise ConfigError("API workers share their rate limits through Redis: set RERANK_BROKER_URL")
    client = connect(broker_url)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise BrokerError(f"the Redis at {redact(broker_url)} does not answer: {exc}") from None
    rate_limits = RateLimits(
        requests_per_window=settings.api_requests_per_minute,
        tokens_per_window=settings.api_tokens_per_minute,
        window_s=settings.api_rate_window_s,
    )
    # A request whose worker died never releases its place; it frees after twice the timeout.
    limiter = FleetRateLimiter(
        client,
        settings.redis_key_prefix,
        provider.kind,
        credentials.fingerprint,
        rate_limits,
        lease_s=2 * settings.api_timeout_s,
    )
    # httpx logs every request at INFO; keep worker logs to what matters.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    http = httpx.Client(
        timeout=httpx.Timeout(settings.api_timeout_s),
        limits=httpx.Limits(
            max_connections=settings.api_concurrency, max_keepalive_connections=settings.api_concurrency
        ),
        headers={"User-Agent": "bulk-rerank"},
    )
    sender = RequestSender(
        provider=provider,
        model=spec.name,
        credentials=credentials,
        http=http,
        limiter=limiter,
        limits=limits,
        policy=RetryPolicy(settings.api_max_retries, settings.api_backoff_max_s),
        prices=load_price_table(settings.prices_path),
    )
    return ApiReranker(spec, sender, settings.api_concurrency)


def check_api_config(spec: ModelSpec, settings: Settings) -> None:
    """Fail before any worker starts when the key (or AWS credentials) is missing, an option of the spec
    is bad, the model cannot be named in requests, or the price table is invalid."""
    provider = provider_for(spec)
    provider.served_model(spec.name, load_auth(spec, provider, settings))
    load_price_table(settings.prices_path)


def load_auth(spec: ModelSpec, provider: Provider, settings: Settings) -> RequestAuth:
    """The endpoint (``RERANK_<KIND>_PATH``, else the provider's path, after the base URL) and the
    authentication of ``spec``'s API: an AWS signature where its kind signs requests, else its key. Raises
    ``ConfigError`` when they are missing."""
    endpoint = settings.api(spec.kind)
    path = endpoint.path if endpoint.path is not None else provider.path
    service = API_KINDS[spec.kind].aws_signing_service
    if service is None:
        return load_credentials(endpoint, path)
    if endpoint.api_key is not None or endpoint.api_key_file is not None:
        raise ConfigError(
            f"the {spec.kind} API signs requests with AWS credentials, not a key: unset "
            f"{endpoint.variable('api_key')} and {endpoint.variable('api_key_file')}"
        )
    return load_aws_signature(endpoint, service, path, spec.name)


def _limits(defaults: ProviderLimits, settings: Settings) -> ProviderLimits:
    """The provider's defaults, overridden by settings; a request never exceeds the token budget."""
    request_caps = [cap for cap in (defaults.max_tokens_per_request, settings.api_tokens_per_minute) if cap]
    fixed_single = defaults.max_documents == 1  # the LLM judge scores one pair per request
    return ProviderLimits(
        max_documents=defaults.max_documents
        if fixed_single
        else settings.api_max_documents or defaults.max_documents,
        max_tokens_per_document=settings.api_max_tokens_per_document or defaults.max_tokens_per_document,
        max_tokens_per_request=min(request_caps) if request_caps else None,
    )
