"""Reconciliation: inventory snapshots written by the platform, and the snapshots
reconcile applied.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from metering.store.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _table_options() -> dict[str, Any]:
    """As in 0001 (revision files are not importable modules): binary, no-pad collation
    on MySQL/MariaDB, so keys compare byte for byte like usage_events'."""
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return {}
    version = str(bind.exec_driver_sql("SELECT VERSION()").scalar())
    if "mariadb" in version.lower():
        collation = "utf8mb4_nopad_bin"
    elif version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 8:
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade() -> None:
    opts = _table_options()
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
