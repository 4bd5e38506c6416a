"""Data flows: when an ended provider flow's workspace is deleted (signaling.retention_seconds).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataflows") as batch:
        batch.add_column(sa.Column("delete_after", UTCDateTime(), nullable=True))
        batch.create_index("ix_dataflows_delete_after", ["delete_after"])


def downgrade() -> None:
    with op.batch_alter_table("dataflows") as batch:
        batch.drop_index("ix_dataflows_delete_after")
        batch.drop_column("delete_after")
