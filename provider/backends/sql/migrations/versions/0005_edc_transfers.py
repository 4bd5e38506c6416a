"""Registrations of EDC transfers that fill a workspace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edc_transfers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("transfer_process_id", sa.String(255), nullable=True),
        sa.Column("contract_id", sa.String(255), nullable=True),
        sa.Column("target_key", sa.String(1024), nullable=False),
        sa.Column("import_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_edc_transfers_workspace_id_workspaces"
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_edc_transfers_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_edc_transfers"),
    )
    op.create_index("ix_edc_transfers_workspace_id", "edc_transfers", ["workspace_id"])
    op.create_index("ix_edc_transfers_transfer_process_id", "edc_transfers", ["transfer_process_id"])
    op.create_index("ix_edc_transfers_contract_id", "edc_transfers", ["contract_id"])


def downgrade() -> None:
    op.drop_table("edc_transfers")
