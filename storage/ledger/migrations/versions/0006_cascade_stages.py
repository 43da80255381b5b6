"""A later stage of a cascade names the cascade's first run and its stage number, one run per stage.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("cascade_of", sa.String(64), nullable=True))
        runs.add_column(sa.Column("stage", sa.Integer(), nullable=True))
        runs.create_index("uq_runs_cascade_stage", ["cascade_of", "stage"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.drop_index("uq_runs_cascade_stage")
        runs.drop_column("stage")
        runs.drop_column("cascade_of")
