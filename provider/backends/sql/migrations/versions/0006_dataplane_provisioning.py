"""Data-plane provisioning: the provisioner kind and which callback is pending.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provisionings") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="control"))
        batch.add_column(sa.Column("pending", sa.String(16), nullable=True))
    op.execute("UPDATE provisionings SET pending = 'provision' WHERE state = 'callback_pending'")


def downgrade() -> None:
    with op.batch_alter_table("provisionings") as batch:
        batch.drop_column("pending")
        batch.drop_column("kind")
