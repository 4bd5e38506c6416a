"""EDC provisionings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provisionings",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("connector", sa.String(63), nullable=False),
        sa.Column("transfer_process_id", sa.String(255), nullable=False),
        sa.Column("resource_definition_id", sa.String(255), nullable=False),
        sa.Column("asset_id", sa.String(255), nullable=False),
        sa.Column("callback_address", sa.Text(), nullable=False),
        sa.Column("participant_id", sa.String(512), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("access_code_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delete_after", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_provisionings_tenant_id_tenants"),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_provisionings_workspace_id_workspaces"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_provisionings"),
        sa.UniqueConstraint(
            "connector",
            "transfer_process_id",
            "resource_definition_id",
            name="uq_provisionings_transfer",
        ),
    )
    op.create_index("ix_provisionings_workspace_id", "provisionings", ["workspace_id"])
    op.create_index("ix_provisionings_state", "provisionings", ["state"])


def downgrade() -> None:
    op.drop_table("provisionings")
