"""Reconciliation: inventory snapshots written by the platform, and the snapshots
reconcile applied.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from metering.store.ddl import table_options
from metering.store.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    opts = table_options(op.get_bind())
    op.create_table(
        "inventory_snapshots",
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("entity", sa.String(32), primary_key=True),
        sa.Column("resource_id", sa.String(64), primary_key=True),
        sa.Column("taken_at", UTCDateTime(), nullable=False),
        sa.Column("offering", sa.String(64), nullable=True),
        **opts,
    )
    op.create_index("ix_inventory_snapshots_taken", "inventory_snapshots", ["taken_at"])

    op.create_table(
        "reconciliations",
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("taken_at", UTCDateTime(), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        sa.Column("listed", sa.Integer, nullable=False),
        sa.Column("starts", sa.Integer, nullable=False),
        sa.Column("stops", sa.Integer, nullable=False),
        sa.Column("updates", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        **opts,
    )
    op.create_index("ix_reconciliations_taken", "reconciliations", ["taken_at"])


def downgrade() -> None:
    op.drop_table("reconciliations")
    op.drop_table("inventory_snapshots")
