"""Executions and their labels.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import JSONType, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("asset_id", sa.String(63), nullable=False),
        sa.Column("asset_version", sa.String(64), nullable=False),
        sa.Column("inputs", JSONType, nullable=False),
        sa.Column("env", JSONType, nullable=False),
        sa.Column("labels", JSONType, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("history", JSONType, nullable=False),
        sa.Column("outputs", JSONType, nullable=False),
        sa.Column("logs_key", sa.String(1024), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("callback", JSONType, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_executions_tenant_id_tenants"),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_executions_workspace_id_workspaces"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_executions_tenant_id_idempotency_key"),
    )
    for column in ("tenant_id", "workspace_id", "asset_id", "state"):
        op.create_index(f"ix_executions_{column}", "executions", [column])
    op.create_table(
        "execution_labels",
        sa.Column("execution_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(63), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"], ["executions.id"], name="fk_execution_labels_execution_id_executions"
        ),
        sa.PrimaryKeyConstraint("execution_id", "key", name="pk_execution_labels"),
    )
    op.create_index("ix_execution_labels_key_value", "execution_labels", ["key", "value"])


def downgrade() -> None:
    op.drop_table("execution_labels")
    op.drop_table("executions")
