"""Which Redis the fleet uses: the configured URL, or the embedded server under the data dir."""

from __future__ import annotations

from core.broker.embedded import EmbeddedRedis
from core.broker.url import is_reachable, redact
from core.errors import BrokerError
from core.settings import Settings


def embedded_broker(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(settings.resolved_state_dir / "redis")


def resolve_broker_url(settings: Settings) -> str:
    """The broker URL to use, starting the embedded server if none is configured. Raises
    ``BrokerError`` when a configured broker does not answer."""
    broker_url = settings.resolved_broker_url
    if broker_url is None:
        return embedded_broker(settings).ensure_running()
    if not is_reachable(broker_url):
        raise BrokerError(
            f"the broker at {redact(broker_url)} does not answer; start Redis there or unset "
            "RERANK_BROKER_URL to use the embedded one"
        )
    return broker_url
