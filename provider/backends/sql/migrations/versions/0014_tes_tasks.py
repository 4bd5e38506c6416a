"""GA4GH TES: an execution's program and step logs; the tasks' documents and tags. And the
record of the oldest code that may run on the schema.

Only new nullable columns and new tables: the previous release (0013) runs on this schema.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.backends.sql.tables import JSONType, UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


OLDEST_CODE = "0013"  # what this migration leaves running code able to do


def upgrade() -> None:
    compatibility = op.create_table(
        "schema_compatibility",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("oldest_code", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schema_compatibility"),
    )
    op.bulk_insert(compatibility, [{"id": 1, "oldest_code": OLDEST_CODE}])
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("program", JSONType, nullable=True))
        batch.add_column(sa.Column("steps", JSONType, nullable=True))
    op.create_table(
        "tes_tasks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(1024), nullable=True),
        sa.Column("tags", JSONType, nullable=False),
        sa.Column("document", JSONType, nullable=False),
        sa.Column("input_keys", JSONType, nullable=False),
        sa.Column("output_keys", JSONType, nullable=False),
        sa.Column("imports", JSONType, nullable=False),
        sa.Column("warnings", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tes_tasks"),
        sa.ForeignKeyConstraint(["id"], ["executions.id"], name="fk_tes_tasks_id_executions"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_tes_tasks_tenant_id_tenants"),
    )
    op.create_index("ix_tes_tasks_tenant_id", "tes_tasks", ["tenant_id"])
    op.create_index("ix_tes_tasks_name", "tes_tasks", ["name"])
    op.create_table(
        "tes_task_tags",
        sa.Column("task_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "key", name="pk_tes_task_tags"),
        sa.ForeignKeyConstraint(["task_id"], ["tes_tasks.id"], name="fk_tes_task_tags_task_id_tes_tasks"),
    )
    op.create_index("ix_tes_task_tags_key_value", "tes_task_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_tes_task_tags_key_value", table_name="tes_task_tags")
    op.drop_table("tes_task_tags")
    op.drop_index("ix_tes_tasks_name", table_name="tes_tasks")
    op.drop_index("ix_tes_tasks_tenant_id", table_name="tes_tasks")
    op.drop_table("tes_tasks")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("steps")
        batch.drop_column("program")
    op.drop_table("schema_compatibility")
