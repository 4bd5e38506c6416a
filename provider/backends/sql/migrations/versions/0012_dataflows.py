"""Data Plane Signaling: data flows and control plane registrations.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataflows",
        sa.Column("control_plane", sa.String(64), nullable=False),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("profile", sa.String(512), nullable=False),
        sa.Column("participant_id", sa.String(512), nullable=False),
        sa.Column("counter_party_id", sa.String(512), nullable=False),
        sa.Column("agreement_id", sa.String(512), nullable=False),
        sa.Column("dataset_id", sa.String(512), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("target_key", sa.String(1024), nullable=True),
        sa.Column("import_id", sa.String(40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("notice", sa.String(16), nullable=True),
        sa.Column("notice_attempts", sa.Integer(), nullable=False),
        sa.Column("next_notice_at", UTCDateTime(), nullable=True),
        sa.Column("notice_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_dataflows_tenant_id_tenants"),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_dataflows_workspace_id_workspaces"
        ),
        sa.PrimaryKeyConstraint("control_plane", "id", name="pk_dataflows"),
    )
    op.create_index("ix_dataflows_workspace_id", "dataflows", ["workspace_id"])
    op.create_index("ix_dataflows_import_id", "dataflows", ["import_id"])
    op.create_index("ix_dataflows_next_notice_at", "dataflows", ["next_notice_at"])
    op.create_table(
        "control_plane_registrations",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("controlplane_id", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_control_plane_registrations"),
    )


def downgrade() -> None:
    op.drop_table("control_plane_registrations")
    op.drop_table("dataflows")
