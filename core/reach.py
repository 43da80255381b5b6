"""Which parts of a configuration only serve workers on this machine: an embedded broker bound to
loopback, a SQLite ledger. A fleet across machines needs neither. (A local data dir may be a shared
mount, so it is not named.)"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from core.settings import Settings


def local_only_parts(settings: Settings) -> list[str]:
    """One phrase per part that workers on other machines cannot reach."""
    parts = []
    if settings.broker_url is None:
        parts.append("the broker is the embedded Redis on 127.0.0.1 (set RERANK_BROKER_URL)")
    if make_url(settings.resolved_ledger_url).get_backend_name() == "sqlite":
        parts.append("the ledger is a SQLite file (set RERANK_LEDGER_URL to PostgreSQL)")
    return parts


def local_only_warning(settings: Settings) -> str | None:
    """A one-line warning naming what keeps this configuration to one machine, or None for a fleet's."""
    parts = local_only_parts(settings)
    if not parts:
        return None
    return "note: workers on other machines cannot join this setup: " + "; ".join(parts)
