"""The key of a shard's published scores, chosen by the fenced publish (exactly-once without rename).

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shards") as shards:
        shards.add_column(sa.Column("scores_path", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shards") as shards:
        shards.drop_column("scores_path")
