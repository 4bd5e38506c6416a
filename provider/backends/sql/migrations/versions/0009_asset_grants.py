"""Asset grants: the catalog assets a workspace (from its offering) and a tenant (from the
operator) may run; NULL for no limit, which keeps every existing workspace and tenant as it was.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import JSONType

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("workspaces", "tenants"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("allowed_assets", JSONType, nullable=True))


def downgrade() -> None:
    for table in ("workspaces", "tenants"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("allowed_assets")
