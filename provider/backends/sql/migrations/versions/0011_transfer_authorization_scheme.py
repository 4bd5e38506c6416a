"""EDC transfer registrations: the scheme (if any) to put before an EDR's token.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("edc_transfers") as batch:
        batch.add_column(sa.Column("authorization_scheme", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("edc_transfers") as batch:
        batch.drop_column("authorization_scheme")
