"""Initial schema: events, usage lines, runs, watermark state, gaps, resource state,
pending measures, rejected events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from metering.store.ddl import table_options
from metering.store.types import BigId, Quantity, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _now_default() -> sa.TextClause:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        return sa.text("CURRENT_TIMESTAMP(3)")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")


def upgrade() -> None:
    opts = table_options(op.get_bind())
    op.create_table(
        "usage_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("offering", sa.String(64), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=True),
        sa.Column("unit", sa.String(16), nullable=True),
        sa.Column("period_start", UTCDateTime(), nullable=True),
        sa.Column("period_end", UTCDateTime(), nullable=True),
        sa.Column("attributes", sa.JSON, nullable=True),
        sa.Column("ingested_at", UTCDateTime(), nullable=False, server_default=_now_default()),
        sa.UniqueConstraint("event_id", name="uq_usage_events_event_id"),
        sqlite_autoincrement=True,
        **opts,
    )
    op.create_index(
        "ix_usage_events_resource",
        "usage_events",
        ["account", "entity", "resource_id", "occurred_at", "id"],
    )
    op.create_index("ix_usage_events_kind_id", "usage_events", ["kind", "id"])
    op.create_index("ix_usage_events_period_start", "usage_events", ["period_start"])

    op.create_table(
        "usage_lines",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("offering", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("quantity", Quantity(), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sqlite_autoincrement=True,
        **opts,
    )
    op.create_index(
        "ix_usage_lines_key",
        "usage_lines",
        ["account", "entity", "resource_id", "source", "period_start"],
    )
    op.create_index("ix_usage_lines_run", "usage_lines", ["run_id"])
    op.create_index("ix_usage_lines_period", "usage_lines", ["period_start"])

    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("clock", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("hours_from", UTCDateTime(), nullable=True),
        sa.Column("hours_to", UTCDateTime(), nullable=True),
        sa.Column("first_event_id", sa.BigInteger, nullable=True),
        sa.Column("last_event_id", sa.BigInteger, nullable=True),
        sa.Column("events_read", sa.Integer, nullable=False),
        sa.Column("lines_written", sa.Integer, nullable=False),
        sa.Column("corrections", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("anomalies", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("message", sa.String(1000), nullable=True),
        **opts,
    )
    op.create_index("ix_runs_started", "runs", ["started_at"])

    op.create_table(
        "metering_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("last_event_id", sa.BigInteger, nullable=False),
        sa.Column("billed_until", UTCDateTime(), nullable=True),
        sa.Column("max_measure_period_ms", sa.BigInteger, nullable=False),
        sa.Column("last_run_id", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        **opts,
    )
    op.execute(
        "INSERT INTO metering_state (id, version, last_event_id, max_measure_period_ms) "
        "VALUES (1, 0, 0, 0)"
    )

    op.create_table(
        "event_gaps",
        sa.Column("id_from", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id_to", sa.BigInteger, nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        **opts,
    )

    op.create_table(
        "resource_state",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("entity", sa.String(32), primary_key=True),
        sa.Column("resource_id", sa.String(64), primary_key=True),
        sa.Column("running", sa.Boolean, nullable=False),
        sa.Column("offering", sa.String(64), nullable=True),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("destroyed", sa.Boolean, nullable=False),
        sa.Column("pending_from", UTCDateTime(), nullable=True),
        sa.Column("last_event_at", UTCDateTime(), nullable=True),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        **opts,
    )
    op.create_index("ix_resource_state_running", "resource_state", ["running"])
    op.create_index("ix_resource_state_pending", "resource_state", ["pending_from"])

    op.create_table(
        "pending_usage",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
        **opts,
    )
    op.create_index("ix_pending_usage_hour", "pending_usage", ["hour"])

    op.create_table(
        "rejected_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("event_row_id", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("reviewed", sa.Boolean, nullable=False),
        sqlite_autoincrement=True,
        **opts,
    )
    op.create_index("ix_rejected_events_run", "rejected_events", ["run_id"])
    op.create_index("ix_rejected_events_event", "rejected_events", ["event_row_id"])


def downgrade() -> None:
    for table in (
        "rejected_events",
        "pending_usage",
        "resource_state",
        "event_gaps",
        "metering_state",
        "runs",
        "usage_lines",
        "usage_events",
    ):
        op.drop_table(table)
