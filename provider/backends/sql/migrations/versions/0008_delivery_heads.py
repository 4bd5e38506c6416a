"""Deliveries: mark the head of each subscription's queue, so that claiming reads only heads.

Without it a claim walks every pending delivery to find the heads, and one dead receiver with a
large backlog would slow every delivery round of every subscription.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

READY = "state = 'pending' AND ready"


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("ready", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE deliveries SET ready = true WHERE state = 'pending' AND NOT EXISTS ("
        " SELECT 1 FROM deliveries earlier WHERE earlier.subscription_id = deliveries.subscription_id"
        " AND earlier.state = 'pending' AND earlier.event_seq < deliveries.event_seq)"
    )
    op.create_index(
        "ix_deliveries_ready",
        "deliveries",
        ["next_attempt_at", "event_seq"],
        postgresql_where=sa.text(READY),
        sqlite_where=sa.text(READY),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_ready", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("ready")
