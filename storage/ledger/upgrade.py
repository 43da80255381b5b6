"""Bringing a ledger's schema up to date with Alembic, in place, from any earlier version.

Ledgers made before migrations existed (tables created directly, no ``alembic_version``) are stamped
with the revision their columns match and upgraded from there."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (idempotent)."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Workers starting together would otherwise race to create the same tables.
            connection.execute(text("select pg_advisory_xact_lock(4242001)"))
        config.attributes["connection"] = connection
        if current_revision_of(connection) is None and inspect(connection).has_table("runs"):
            command.stamp(config, unversioned_revision(connection))
        command.upgrade(config, revision)


def unversioned_revision(connection: Connection) -> str:
    """The revision a ledger created without Alembic (tables made directly) corresponds to."""
    shard_columns = {column["name"] for column in inspect(connection).get_columns("shards")}
    run_columns = {column["name"] for column in inspect(connection).get_columns("runs")}
    if "cascade_of" in run_columns:
        return "0006"
    if "shadow_of" in run_columns:
        return "0005"
    if "truncated_pairs" in {column["name"] for column in inspect(connection).get_columns("usage")}:
        return "0004"
    if "scores_path" in shard_columns:
        return "0003"
    return "0002" if "attempts_base" in shard_columns else FIRST_REVISION


def current_revision_of(connection: object) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()  # type: ignore[arg-type]
