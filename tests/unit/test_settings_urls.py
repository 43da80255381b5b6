"""Passwords read from files into the broker and ledger URLs; the state dir of an object-store data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, with_password


def test_a_password_file_fills_in_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("p@ss:word/1\n")
    url = with_password(
        "postgresql+psycopg://rerank@db.internal:5432/rerank?sslmode=verify-full", secret, "X"
    )
    assert url == "postgresql+psycopg://rerank:p%40ss%3Aword%2F1@db.internal:5432/rerank?sslmode=verify-full"
    assert with_password("rediss://redis.internal:6380/0?ssl_cert_reqs=required", secret, "X") == (
        "rediss://:p%40ss%3Aword%2F1@redis.internal:6380/0?ssl_cert_reqs=required"
    )


def test_a_password_in_the_url_wins_and_no_file_changes_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file")
    assert with_password("redis://:inline@host/0", secret, "X") == "redis://:inline@host/0"
    assert with_password("redis://host/0", None, "X") == "redis://host/0"


def test_a_missing_or_empty_password_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"RERANK_LEDGER_PASSWORD_FILE: cannot read .*absent"):
        with_password("postgresql://u@h/db", tmp_path / "absent", "RERANK_LEDGER_PASSWORD_FILE")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        with_password("postgresql://u@h/db", tmp_path / "empty", "RERANK_LEDGER_PASSWORD_FILE")


def test_settings_put_the_password_files_into_both_urls(tmp_path: Path) -> None:
    (tmp_path / "pg").write_text("pg-secret")
    (tmp_path / "redis").write_text("redis-secret")
    settings = Settings(
        ledger_url="postgresql+psycopg://rerank@db:5432/rerank",
        ledger_password_file=tmp_path / "pg",
        broker_url="rediss://redis:6380/0?ssl_cert_reqs=required",
        broker_password_file=tmp_path / "redis",
    )
    assert settings.resolved_ledger_url == "postgresql+psycopg://rerank:pg-secret@db:5432/rerank"
    assert settings.resolved_broker_url == "rediss://:redis-secret@redis:6380/0?ssl_cert_reqs=required"


def test_local_state_lives_in_the_data_dir_unless_that_is_a_uri(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path / "data").resolved_state_dir == tmp_path / "data"
    remote = Settings(data_dir="s3://bucket/nightly")
    assert remote.resolved_state_dir == Path("data").resolve()
    assert remote.resolved_ledger_url == f"sqlite:///{Path('data').resolve() / 'ledger.db'}"
    pinned = Settings(data_dir="s3://bucket/nightly", state_dir=tmp_path / "state")
    assert pinned.resolved_ledger_url == f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
