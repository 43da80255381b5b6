"""The exception hierarchy. Every error bulk-rerank raises on purpose derives from ``RerankError``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.usage import RequestUsage


class RerankError(Exception):
    """Root of bulk-rerank's own errors."""


class ConfigError(RerankError):
    """Raised when settings or command-line flags are inconsistent; the message says which one to fix."""


class CorpusError(RerankError):
    """Raised when the input corpus is unreadable or invalid; nothing has been enqueued or written."""


class ModelSpecError(RerankError):
    """Raised when a ``--model`` value cannot be understood; use ``kind:name`` with a known kind."""


class MessageError(RerankError):
    """Raised when a task message is malformed or points outside the data directory; never retried."""


class BrokerError(RerankError):
    """Raised when the Redis broker cannot be reached or started."""


class NoDeviceError(RerankError):
    """Raised when GPUs are asked for and none is visible; use ``--cpu N`` or check the driver."""


class ModelLoadError(RerankError):
    """Raised when a reranker cannot be loaded; the message names the model and the reason."""


class DeviceOutOfMemoryError(RerankError):
    """Raised when a lone pair does not fit in device memory; lower RERANK_MAX_LENGTH or use a bigger GPU."""


class ProviderError(RerankError):
    """Raised when a hosted rerank API kept failing (429, 5xx, timeouts, malformed answers) after every
    retry; the shard attempt is retried later. ``requests`` holds the usage of every HTTP request the
    attempt made, failed ones included, so that the ledger can record what was billed."""

    def __init__(self, message: str, requests: Sequence[RequestUsage] = ()) -> None:
        super().__init__(message)
        self.requests: tuple[RequestUsage, ...] = tuple(requests)


class PermanentProviderError(ProviderError):
    """Raised when a hosted rerank API refused a request outright (a 4xx other than 429: bad key, unknown
    model, invalid input); retrying cannot help, so the shard fails at once. The message is the
    provider's own, with the API key removed: fix the key, the model name or the limits it names."""


class StorageError(RerankError):
    """Raised when a location (local path or storage URI) cannot be parsed, reached, read or written; the
    message names the location, without credentials, and the reason: missing bucket, denied access."""


class StorageUnreachableError(StorageError):
    """Raised when a storage endpoint does not answer (network, DNS, TLS); the location itself may be fine."""


class BudgetExhaustedError(ProviderError):
    """Raised before a request (or a shard) that the run's budget cannot pay for: its spent and reserved
    cost or tokens reached ``--max-cost-usd`` or ``--max-tokens``. The shard goes back to the queue and
    the run pauses (``paused_budget``) until ``submit.py --resume RUN_ID`` raises the budget. Like a
    ``ProviderError`` it carries the usage of the requests the attempt made before it stopped."""
