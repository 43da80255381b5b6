"""Alembic migrations of the ledger; ``storage.ledger_migrations.upgrade`` applies them."""
