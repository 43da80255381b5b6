"""Alembic environment: runs migrations on the connection that ``storage.ledger.upgrade`` hands in."""

from __future__ import annotations

from alembic import context

from storage.ledger.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
