"""Sending one planned request until it is answered: budget from the fleet's limiter, one HTTP attempt at
a time, a usage record per attempt, and the retry policy.

429: the whole fleet pauses for the provider's Retry-After (else the backoff), then retries. 5xx,
timeouts, dropped connections and malformed answers: retried after capped exponential backoff with full
jitter. Any other 4xx: ``PermanentProviderError`` at once, with the provider's message. Every text that
leaves here has the API key scrubbed out.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import httpx

from core.errors import PermanentProviderError, ProviderError
from core.kinds import ProviderLimits
from core.pricing import PriceTable
from core.usage import RequestOutcome, RequestUsage
from storage.ledger import utcnow
from worker.backends.api.credentials import RequestAuth
from worker.backends.api.planning import PlannedRequest
from worker.backends.api.provider import (
    Answer,
    MalformedAnswerError,
    Provider,
    error_message,
)
from worker.backends.api.rate_headers import retry_after_seconds
from worker.backends.api.rate_limiter import CancelledError, FleetRateLimiter
from worker.backends.api.tokens import TokenCalibration
from worker.backends.spending import SpendGate

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
# Outcomes after which the provider may have scored (and billed) the request without us seeing usage.
_MAYBE_BILLED = (RequestOutcome.SERVER_ERROR, RequestOutcome.TIMEOUT, RequestOutcome.MALFORMED)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_max_s: float

    def backoff_s(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**retry)]."""
        return random.uniform(0, min(self.backoff_max_s, BACKOFF_BASE_S * 2**retry))


class UsageLog:
    """The request attempts of one shard attempt, numbered from 1 in the order they start."""

    def __init__(self) -> None:
        self._records: list[RequestUsage] = []
        self._next_index = 1
        self._lock = threading.Lock()

    def next_index(self) -> int:
        with self._lock:
            index = self._next_index
            self._next_index += 1
            return index

    def add(self, record: RequestUsage) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> tuple[RequestUsage, ...]:
        with self._lock:
            return tuple(sorted(self._records, key=lambda record: record.request_index))


@dataclass(frozen=True)
class _Attempt:
    outcome: RequestOutcome
    status_code: int | None
    answer: Answer | None = None
    detail: str = ""
    retry_after_s: float | None = None


class RequestSender:
    """Sends planned requests for one provider and model; shared by the threads of a worker process."""

    def __init__(
        self,
        provider: Provider,
        model: str,
        credentials: RequestAuth,
        http: httpx.Client,
        limiter: FleetRateLimiter,
        limits: ProviderLimits,
        policy: RetryPolicy,
        prices: PriceTable,
    ) -> None:
        self.provider = provider
        self.model = model
        self.credentials = credentials
        self.http = http
        self.limiter = limiter
        self.limits = limits
        self.policy = policy
        self.prices = prices
        self.calibration = TokenCalibration()
        self.endpoint = credentials.endpoint_url
        self.served_model = provider.served_model(model, credentials)

    def send(
        self,
        request: PlannedRequest,
        usage: UsageLog,
        cancelled: threading.Event,
        gate: SpendGate | None = None,
    ) -> list[float]:
        """The request's scores, in the order of ``request.texts``. Raises ``ProviderError`` (retries
        exhausted), ``PermanentProviderError``, ``BudgetExhaustedError`` (``gate`` refused the request:
        the run's budget is spent) or ``CancelledError``."""
        body = self.provider.body(self.served_model, request.query, request.texts, self.limits)
        content = json.dumps(body).encode()  # what is sent, and signed, on every attempt
        for retry in range(self.policy.max_retries + 1):
            if cancelled.is_set():
                raise CancelledError
            reserved = self._reserve(request, gate)
            lease = self.limiter.acquire(self.calibration.scale(request.estimated_tokens), cancelled)
            index, started_at, clock = usage.next_index(), utcnow(), time.monotonic()
            attempt = self._post(content, len(request.texts))
            reported = attempt.answer.tokens if attempt.answer is not None else None
            self.limiter.release(lease, reported if reported is not None else request.estimated_tokens)
            record = self._record(index, request, attempt, started_at, time.monotonic() - clock)
            usage.add(record)
            if gate is not None:
                gate.settle(reserved, record.cost_usd or 0.0, record.tokens)
            if attempt.answer is not None:
                if reported is not None:
                    self.calibration.observe(request.estimated_tokens, reported)
                return attempt.answer.scores
            message = f"{self.provider.kind} answered {attempt.outcome.value}: {attempt.detail}"
            if attempt.outcome is RequestOutcome.REJECTED:
                raise PermanentProviderError(message)
            if attempt.outcome is RequestOutcome.RATE_LIMITED:
                asked = attempt.retry_after_s
                paused = self.limiter.pause(asked if asked is not None else self.policy.backoff_s(retry))
                log.warning("%s; the fleet pauses this key for %.2fs", message, paused)
            if retry == self.policy.max_retries:
                raise ProviderError(f"{message} (gave up after {retry + 1} attempts)")
            if attempt.outcome is not RequestOutcome.RATE_LIMITED:
                delay = self.policy.backoff_s(retry)
                log.warning("%s; retrying in %.2fs", message, delay)
                cancelled.wait(delay)
        raise AssertionError("unreachable: the last retry returns or raises")

    def _reserve(self, request: PlannedRequest, gate: SpendGate | None) -> object:
        """Reserve the request's estimated cost and tokens with ``gate`` (None: no limit applies)."""
        if gate is None:
            return None
        search_units = self.provider.estimate_search_units(len(request.texts))
        estimate = self.prices.api_cost(
            self.provider.kind, self.model, utcnow().date(), request.estimated_tokens, 0, search_units
        )
        return gate.reserve(estimate or 0.0, request.estimated_tokens)

    def _post(self, content: bytes, n_texts: int) -> _Attempt:
        try:
            headers = {"Content-Type": "application/json", **self.credentials.headers(self.endpoint, content)}
            response = self.http.post(self.endpoint, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            return _Attempt(RequestOutcome.TIMEOUT, None, detail=self._scrub(f"{type(exc).__name__}: {exc}"))
        except httpx.TransportError as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            return _Attempt(RequestOutcome.TRANSPORT_ERROR, None, detail=detail)
        status = response.status_code
        if 200 <= status < 300:
            try:
                return _Attempt(
                    RequestOutcome.OK, status, answer=self.provider.parse(response.json(), n_texts)
                )
            except (json.JSONDecodeError, UnicodeDecodeError, MalformedAnswerError) as exc:
                return _Attempt(RequestOutcome.MALFORMED, status, detail=self._scrub(f"HTTP {status}: {exc}"))
        detail = self._scrub(f"HTTP {status}: {error_message(response.text)}")
        if status == 429:
            wait = retry_after_seconds(response.headers)
            return _Attempt(RequestOutcome.RATE_LIMITED, status, detail=detail, retry_after_s=wait)
        if status >= 500 or status == 408:
            return _Attempt(RequestOutcome.SERVER_ERROR, status, detail=detail)
        return _Attempt(RequestOutcome.REJECTED, status, detail=detail)

    def _record(
        self, index: int, request: PlannedRequest, attempt: _Attempt, started_at: datetime, seconds: float
    ) -> RequestUsage:
        answer = attempt.answer
        if answer is not None:
            tokens = answer.tokens if answer.tokens is not None else request.estimated_tokens
            output_tokens = answer.output_tokens
            search_units = answer.search_units
            if search_units is None:
                search_units = self.provider.estimate_search_units(len(request.texts))
        elif attempt.outcome in _MAYBE_BILLED:
            tokens, output_tokens = request.estimated_tokens, 0
            search_units = self.provider.estimate_search_units(len(request.texts))
        else:
            tokens = output_tokens = search_units = 0
        cost = self.prices.api_cost(
            self.provider.kind, self.model, started_at.date(), tokens, output_tokens, search_units
        )
        return RequestUsage(
            request_index=index,
            provider=self.provider.kind,
            outcome=attempt.outcome,
            pairs=len(request.texts),
            tokens=tokens,
            output_tokens=output_tokens,
            search_units=search_units,
            cost_usd=cost,
            wall_seconds=seconds,
            started_at=started_at,
            finished_at=utcnow(),
            status_code=attempt.status_code,
        )

    def _scrub(self, text: str) -> str:
        return self.credentials.scrub(text)
