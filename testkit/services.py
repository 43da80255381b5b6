"""Real services for tests: Redis (the local server on its own database, else the embedded one) and
PostgreSQL (a schema of its own per test session). Only what a test session owns is ever deleted."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from core.broker.embedded import EmbeddedRedis
from core.broker.url import connect, is_reachable

LOCAL_REDIS_URL = os.environ.get("RERANK_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
LOCAL_POSTGRES_URL = os.environ.get(
    "RERANK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def redis_for_tests(scratch: Path) -> Iterator[str]:
    """A Redis URL: the local server's test database if it answers, else an embedded server."""
    if is_reachable(LOCAL_REDIS_URL):
        yield LOCAL_REDIS_URL
        return
    embedded = EmbeddedRedis(scratch / "embedded-redis")
    url = embedded.ensure_running()
    try:
        yield url
    finally:
        embedded.stop()


def delete_prefixed(url: str, prefix: str) -> None:
    client = connect(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def new_prefix() -> str:
    return f"rerank-test-{secrets.token_hex(4)}:"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A SQLAlchemy URL whose connections use a fresh schema, dropped afterwards. Skips the calling
    test when no PostgreSQL answers, except on CI where PostgreSQL is required."""
    admin = create_engine(LOCAL_POSTGRES_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise
        import pytest  # only tests come here; scripts that use testkit run without the test tools

        pytest.skip(f"PostgreSQL not reachable at {LOCAL_POSTGRES_URL}: {exc}")
    schema = f"rerank_test_{secrets.token_hex(4)}"
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    separator = "&" if "?" in LOCAL_POSTGRES_URL else "?"
    try:
        yield f"{LOCAL_POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()
