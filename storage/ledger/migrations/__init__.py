"""Alembic migrations of the ledger; ``storage.ledger.upgrade.upgrade`` applies them."""
