"""``ApiReranker``: the ``Reranker`` of a hosted API. A shard is cut into requests, which a process-wide
pool of ``RERANK_API_CONCURRENCY`` threads sends over one pooled HTTP client; every request attempt
becomes a usage record, returned with the scores or attached to the error when the shard attempt fails."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait

import httpx
import numpy as np

from core.broker.url import redact
from core.errors import ProviderError
from core.model_spec import ModelSpec
from worker.backends.api.planning import PlannedRequest, plan_requests
from worker.backends.api.sender import RequestSender, UsageLog
from worker.backends.base import API_DEVICE, ScoreResult
from worker.backends.progress_sink import report_progress
from worker.backends.spending import current_gate


class ApiReranker:
    """Scores pairs through ``sender``; thread-safe, so several shards can be scored at once."""

    def __init__(self, spec: ModelSpec, sender: RequestSender, concurrency: int) -> None:
        self.spec = spec
        self.sender = sender
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{spec.kind}-request")

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> ScoreResult:
        """One absolute score per pair, in order. Raises ``ProviderError`` (or its permanent subclass)
        carrying the usage of every request attempt made, failed ones included."""
        limits, provider = self.sender.limits, self.sender.provider
        plan = plan_requests(
            queries, texts, limits, lambda query, batch: provider.estimate_request(query, batch, limits)
        )
        scores = np.full(len(queries), np.nan, dtype=np.float32)
        usage = UsageLog()
        cancelled = threading.Event()
        gate = current_gate()  # read here: the request threads do not see this thread's context
        futures: dict[Future[list[float]], PlannedRequest] = {
            self._pool.submit(self.sender.send, request, usage, cancelled, gate): request for request in plan
        }
        try:
            for future in as_completed(futures):
                scores[list(futures[future].pair_indices)] = future.result()
                report_progress(len(futures[future].pair_indices))
        except Exception as exc:
            cancelled.set()
            for future in futures:
                future.cancel()
            wait(futures)
            if isinstance(exc, ProviderError):
                exc.requests = usage.records
                raise
            message = self.sender.credentials.scrub(f"{type(exc).__name__}: {exc}")
            raise ProviderError(f"scoring with {self.spec} failed: {message}", usage.records) from exc
        records = usage.records
        return ScoreResult(
            scores=scores,
            tokens=sum(record.tokens for record in records),
            device_seconds=0.0,
            requests=records,
        )

    def describe(self) -> dict[str, str]:
        limits = self.sender.limits
        return {
            "kind": self.spec.kind,
            "name": self.spec.name,
            "device": API_DEVICE,
            "endpoint": redact(self.sender.endpoint),
            "score": self.sender.provider.score_meaning,
            "max_documents": str(limits.max_documents),
            "max_tokens_per_document": str(limits.max_tokens_per_document),
            "library": f"httpx {httpx.__version__}",
        }

    def close(self) -> None:
        """Stop the request threads and close the HTTP connections (tests; workers keep theirs)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.sender.http.close()
