"""Retention: the pruned horizon, metering_state.pruned_before. `metering prune`
deleted events dated before it; a backfill or a reconcile may not reach behind it.
In metering_state, which every command's user already reads (no new GRANT for the
run's user).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from metering.store.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metering_state") as batch:
        batch.add_column(sa.Column("pruned_before", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metering_state") as batch:
        batch.drop_column("pruned_before")
