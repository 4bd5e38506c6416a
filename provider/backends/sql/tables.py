"""Table definitions (SQLAlchemy Core). Alembic migrations create them; keep both in step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite has no time zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType: Any = sa.JSON().with_variant(JSONB(), "postgresql")

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("participant_id", sa.String(512), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("allowed_assets", JSONType, nullable=True),  # sorted asset ids; NULL: no limit
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

assets = sa.Table(
    "assets",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("spec", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("location", sa.String(100), nullable=False, unique=True),
    sa.Column("quota_bytes", sa.BigInteger(), nullable=False),
    sa.Column("quota_objects", sa.BigInteger(), nullable=False),
    sa.Column("used_bytes", sa.BigInteger(), nullable=False),
    sa.Column("used_objects", sa.BigInteger(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("usage_checked_at", UTCDateTime(), nullable=True),
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
    sa.Column("allowed_assets", JSONType, nullable=True),  # sorted asset ids; NULL: no limit
)

workspace_tokens = sa.Table(
    "workspace_tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("scopes", JSONType, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

imports = sa.Table(
    "imports",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("source_url", sa.Text(), nullable=False),
    sa.Column("headers", JSONType, nullable=False),
    sa.Column("target_key", sa.String(1024), nullable=False),
    sa.Column("expected_size", sa.BigInteger(), nullable=True),
    sa.Column("expected_sha256", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("bytes_done", sa.BigInteger(), nullable=False),
    sa.Column("bytes_total", sa.BigInteger(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("upstream_status", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("asset_id", sa.String(63), nullable=False, index=True),
    sa.Column("asset_version", sa.String(64), nullable=False),
    sa.Column("inputs", JSONType, nullable=False),
    sa.Column("env", JSONType, nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
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
    sa.Column("attempts", JSONType, nullable=True),  # earlier attempts of a retried execution
    sa.Column("retry_at", UTCDateTime(), nullable=True),
    sa.Column("program", JSONType, nullable=True),  # a TES task's steps and paths
    sa.Column("steps", JSONType, nullable=True),  # how each step ended
    sa.UniqueConstraint("tenant_id", "idempotency_key"),
)

# The oldest code revision that may run on this schema (one row; each migration sets it): a
# replica of the previous release keeps running while newer ones migrate (docs/operations.md).
schema_compatibility = sa.Table(
    "schema_compatibility",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("oldest_code", sa.String(32), nullable=False),
)

# GA4GH TES tasks: the document as submitted, beside the execution that runs it (same id).
tes_tasks = sa.Table(
    "tes_tasks",
    metadata,
    sa.Column("id", sa.String(40), sa.ForeignKey("executions.id"), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("name", sa.String(1024), nullable=True, index=True),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("document", JSONType, nullable=False),
    sa.Column("input_keys", JSONType, nullable=False),
    sa.Column("output_keys", JSONType, nullable=False),
    sa.Column("imports", JSONType, nullable=False),
    sa.Column("warnings", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

tes_task_tags = sa.Table(
    "tes_task_tags",
    metadata,
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tes_tasks.id"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.String(1024), nullable=False),
    sa.Index("ix_tes_task_tags_key_value", "key", "value"),
)

execution_labels = sa.Table(
    "execution_labels",
    metadata,
    sa.Column("execution_id", sa.String(40), sa.ForeignKey("executions.id"), primary_key=True),
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Index("ix_execution_labels_key_value", "key", "value"),
)

provisionings = sa.Table(
    "provisionings",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("connector", sa.String(63), nullable=False),
    sa.Column("transfer_process_id", sa.String(255), nullable=False),
    sa.Column("resource_definition_id", sa.String(255), nullable=False),
    sa.Column("asset_id", sa.String(255), nullable=False),
    sa.Column("callback_address", sa.Text(), nullable=False),
    sa.Column("participant_id", sa.String(512), nullable=False),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("access_code_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("deadline_at", UTCDateTime(), nullable=False),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("delete_after", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, server_default="control"),
    sa.Column("pending", sa.String(16), nullable=True),
    sa.UniqueConstraint(
        "connector", "transfer_process_id", "resource_definition_id", name="uq_provisionings_transfer"
    ),
)

edc_transfers = sa.Table(
    "edc_transfers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("transfer_process_id", sa.String(255), nullable=True, index=True),
    sa.Column("contract_id", sa.String(255), nullable=True, index=True),
    sa.Column("target_key", sa.String(1024), nullable=False),
    sa.Column("import_id", sa.String(40), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("authorization_scheme", sa.String(32), nullable=True),  # NULL: the token as given
)

# Data Plane Signaling: flows by (control plane, processId), and what control planes registered.
dataflows = sa.Table(
    "dataflows",
    metadata,
    sa.Column("control_plane", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("profile", sa.String(512), nullable=False),
    sa.Column("participant_id", sa.String(512), nullable=False),
    sa.Column("counter_party_id", sa.String(512), nullable=False),
    sa.Column("agreement_id", sa.String(512), nullable=False),
    sa.Column("dataset_id", sa.String(512), nullable=False),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    sa.Column("target_key", sa.String(1024), nullable=True),
    sa.Column("import_id", sa.String(40), nullable=True, index=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("notice", sa.String(16), nullable=True),
    sa.Column("notice_attempts", sa.Integer(), nullable=False),
    sa.Column("next_notice_at", UTCDateTime(), nullable=True, index=True),
    sa.Column("notice_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("delete_after", UTCDateTime(), nullable=True, index=True),  # an ended flow's workspace
)

control_plane_registrations = sa.Table(
    "control_plane_registrations",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # the configured control plane it speaks for
    sa.Column("controlplane_id", sa.String(255), nullable=False),
    sa.Column("endpoint", sa.Text(), nullable=False),
    sa.Column("registered_at", UTCDateTime(), nullable=False),
)

# Notifications: events (also the event stream's history), subscriptions, and the outbox of
# deliveries with the attempts made for each. Events, deliveries and the state change they
# report are written in one transaction.
events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("workspace_id", sa.String(40), nullable=True),
    sa.Column("subject_id", sa.String(40), nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Index("ix_events_tenant_id_id", "tenant_id", "id"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("owner_workspace_id", sa.String(40), nullable=True),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("events", JSONType, nullable=False),
    sa.Column("execution_id", sa.String(40), nullable=True, index=True),
    sa.Column("workspace_id", sa.String(40), nullable=True),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("disabled_reason", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

_PENDING_HEAD = sa.text("state = 'pending' AND ready")  # the rows a claim reads

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("subscription_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(40), nullable=False, index=True),
    sa.Column("event_seq", sa.BigInteger(), nullable=False),
    sa.Column("event_type", sa.String(40), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("claimed_until", UTCDateTime(), nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("queued_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    # The oldest pending delivery of its subscription (a hint: claims still check the order).
    sa.Column("ready", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index("ix_deliveries_subscription_id_state_event_seq", "subscription_id", "state", "event_seq"),
    sa.Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    sa.Index(
        "ix_deliveries_ready",
        "next_attempt_at",
        "event_seq",
        postgresql_where=_PENDING_HEAD,
        sqlite_where=_PENDING_HEAD,
    ),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("delivery_id", sa.String(40), primary_key=True),
    sa.Column("number", sa.Integer(), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)
