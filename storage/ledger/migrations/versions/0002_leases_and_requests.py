"""Shard leases (fencing for exactly-once output) and per-request API usage with cost.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shards") as shards:
        shards.add_column(sa.Column("attempts_base", sa.Integer(), nullable=False, server_default="0"))
        shards.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("usage") as usage:
        usage.add_column(sa.Column("request_index", sa.Integer(), nullable=False, server_default="0"))
        usage.add_column(sa.Column("provider", sa.String(64), nullable=True))
        usage.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        usage.drop_index("uq_usage_attempt")
        usage.create_index(
            "uq_usage_attempt", ["run_id", "shard_id", "attempt", "request_index"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("usage") as usage:
        usage.drop_index("uq_usage_attempt")
        usage.create_index("uq_usage_attempt", ["run_id", "shard_id", "attempt"], unique=True)
        usage.drop_column("cost_usd")
        usage.drop_column("provider")
        usage.drop_column("request_index")
    with op.batch_alter_table("shards") as shards:
        shards.drop_column("lease_expires_at")
        shards.drop_column("attempts_base")
