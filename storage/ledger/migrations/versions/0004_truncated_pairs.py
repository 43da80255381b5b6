"""How many of an attempt's scored pairs were cut to fit the model's limit (null: the backend cannot tell).

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as usage:
        usage.add_column(sa.Column("truncated_pairs", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as usage:
        usage.drop_column("truncated_pairs")
