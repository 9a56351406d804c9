"""The tables, as SQLAlchemy Core metadata. Migrations create them; queries use these.

usage_events and usage_lines are the public interface of ../shared/billing-contract.md.
Text columns use a binary collation on MySQL/MariaDB (set by the migration): account
'ACME' and 'acme' are different payers, and so are 'a' and 'a '.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from metering.store.types import BigId, Money, Quantity, UTCDateTime, WholeQuantity

metadata = MetaData()

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("action", String(16), nullable=False),
    Column("account", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("offering", String(64), nullable=True),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("quantity", BigInteger, nullable=True),
    Column("unit", String(16), nullable=True),
    Column("period_start", UTCDateTime(), nullable=True),
    Column("period_end", UTCDateTime(), nullable=True),
    Column("attributes", JSON, nullable=True),
    Column("ingested_at", UTCDateTime(), nullable=False),
    UniqueConstraint("event_id", name="uq_usage_events_event_id"),
    Index("ix_usage_events_resource", "account", "entity", "resource_id", "occurred_at", "id"),
    Index("ix_usage_events_kind_id", "kind", "id"),
    Index("ix_usage_events_period_start", "period_start"),
    sqlite_autoincrement=True,
)

usage_lines = Table(
    "usage_lines",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("account", String(64), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("offering", String(64), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("quantity", Quantity(), nullable=False),
    # 'running' (time from resource events) or 'measure' (quantity events): the two
    # never share a diff even if a measure's unit happens to be 'second'.
    Column("source", String(8), nullable=False),
    Index(
        "ix_usage_lines_key",
        "account",
        "entity",
        "resource_id",
        "source",
        "period_start",
    ),
    Index("ix_usage_lines_run", "run_id"),
    Index("ix_usage_lines_period", "period_start"),
    sqlite_autoincrement=True,
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("clock", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("hours_from", UTCDateTime(), nullable=True),
    Column("hours_to", UTCDateTime(), nullable=True),
    Column("first_event_id", BigInteger, nullable=True),
    Column("last_event_id", BigInteger, nullable=True),
    Column("events_read", Integer, nullable=False, default=0),
    Column("lines_written", Integer, nullable=False, default=0),
    Column("corrections", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("anomalies", Integer, nullable=False, default=0),
    Column("duration_ms", Integer, nullable=True),
    Column("host", String(255), nullable=True),
    Column("message", String(1000), nullable=True),
    Index("ix_runs_started", "started_at"),
)

# One row (id = 1): how far the scheduled runs got. `version` is the commit fence.
metering_state = Table(
    "metering_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("last_event_id", BigInteger, nullable=False),
    Column("billed_until", UTCDateTime(), nullable=True),
    Column("max_measure_period_ms", BigInteger, nullable=False),
    Column("last_run_id", String(64), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=True),
    # The pruned horizon: `metering prune` deleted events dated before it.
    Column("pruned_before", UTCDateTime(), nullable=True),
)

# Ids below the watermark that were not visible when read (uncommitted inserts,
# rollbacks, ids burnt by duplicates, other nodes' share of interleaved ids); re-read
# until older than the settle lag. A row holds the ids x in [id_from, id_to] with
# (x - id_from) % step < width (metering/core/gaps.py); step = width = 1: all of them.
event_gaps = Table(
    "event_gaps",
    metadata,
    Column("id_from", BigInteger, primary_key=True, autoincrement=False),
    Column("id_to", BigInteger, nullable=False),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("step", BigInteger, nullable=False, server_default="1"),
    Column("width", BigInteger, nullable=False, server_default="1"),
)

# Each resource's state at billed_until, so untouched resources need no history.
resource_state = Table(
    "resource_state",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("entity", String(32), primary_key=True),
    Column("resource_id", String(64), primary_key=True),
    Column("running", Boolean, nullable=False),
    Column("offering", String(64), nullable=True),
    Column("since", UTCDateTime(), nullable=True),
    Column("destroyed", Boolean, nullable=False),
    Column("pending_from", UTCDateTime(), nullable=True),
    Column("last_event_at", UTCDateTime(), nullable=True),
    Column("last_seen_at", UTCDateTime(), nullable=True),
    Index("ix_resource_state_running", "running"),
    Index("ix_resource_state_pending", "pending_from"),
)

# Parts of measures read already whose hour is not closed yet.
pending_usage = Table(
    "pending_usage",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account", String(64), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("hour", UTCDateTime(), nullable=False),
    Column("quantity", WholeQuantity(), nullable=False),
    Index("ix_pending_usage_hour", "hour"),
    sqlite_autoincrement=True,
)

rejected_events = Table(
    "rejected_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("event_row_id", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("category", String(16), nullable=False),
    Column("reason", String(255), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("reviewed", Boolean, nullable=False, default=False),
    Index("ix_rejected_events_run", "run_id"),
    Index("ix_rejected_events_event", "event_row_id"),
    sqlite_autoincrement=True,
)

# Written by the platform: the resources running at taken_at, one row each, every
# row of a snapshot in one transaction (a half-written snapshot would look like
# stopped resources). `metering reconcile --from-table` reads it.
inventory_snapshots = Table(
    "inventory_snapshots",
    metadata,
    Column("snapshot_id", String(64), primary_key=True),
    Column("account", String(64), primary_key=True),
    Column("entity", String(32), primary_key=True),
    Column("resource_id", String(64), primary_key=True),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("offering", String(64), nullable=True),
    Index("ix_inventory_snapshots_taken", "taken_at"),
)

# One row per snapshot reconcile applied (file or table), for audits and so cron
# does not apply the same table snapshot every hour.
reconciliations = Table(
    "reconciliations",
    metadata,
    Column("snapshot_id", String(64), primary_key=True),
    Column("source", String(8), nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("policy", String(16), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
    Column("listed", Integer, nullable=False),
    Column("starts", Integer, nullable=False),
    Column("stops", Integer, nullable=False),
    Column("updates", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("host", String(255), nullable=True),
    Index("ix_reconciliations_taken", "taken_at"),
)

# Rating (issue 14). Each `metering prices load` adds a version; none is ever edited.
# `document` is the book's canonical JSON (metering.core.rating.book_document).
price_versions = Table(
    "price_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("valid_from", UTCDateTime(), nullable=False),
    Column("currency", String(16), nullable=False),
    Column("document", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("source", String(255), nullable=True),
    Column("loaded_at", UTCDateTime(), nullable=False),
    Index("ix_price_versions_valid_from", "valid_from"),
)

# A month `metering invoice close` closed: usage lines up to last_line_id are invoiced.
closed_months = Table(
    "closed_months",
    metadata,
    Column("month", String(7), primary_key=True),
    Column("closed_at", UTCDateTime(), nullable=False),
    Column("billed_until", UTCDateTime(), nullable=False),
    Column("last_line_id", BigInteger, nullable=False),
    Column("invoices", Integer, nullable=False),
)

# Immutable once written; the id derives from account and month.
invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(64), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("month", String(7), nullable=False),
    Column("currency", String(16), nullable=False),
    Column("usage_total", Money(), nullable=False),
    Column("total", Money(), nullable=False),
    Column("precision", String(40), nullable=False),
    Column("rounding_mode", String(16), nullable=False),
    Column("rounding_per", String(8), nullable=False),
    Column("closed_at", UTCDateTime(), nullable=False),
    UniqueConstraint("account", "month", name="uq_invoices_account_month"),
    Index("ix_invoices_month", "month"),
)

# kind: usage (priced), unpriced (amount NULL), adjustment (late usage of a closed month).
invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", String(64), primary_key=True),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("entity", String(32), nullable=True),
    Column("offering", String(64), nullable=True),
    Column("unit", String(16), nullable=True),
    Column("quantity", Quantity(), nullable=True),
    Column("per", String(8), nullable=True),
    Column("version", Integer, nullable=True),
    Column("price_source", String(8), nullable=True),
    Column("unit_price", Money(), nullable=True),
    Column("tiers", Text, nullable=True),
    Column("amount", Money(), nullable=True),
    Column("period_from", UTCDateTime(), nullable=True),
    Column("period_to", UTCDateTime(), nullable=True),
    Column("adjusts_invoice", String(64), nullable=True),
    Column("adjusts_month", String(7), nullable=True),
    Column("after_line_id", BigInteger, nullable=True),
    Column("note", String(255), nullable=True),
)

# The export ledger: one row per export, and per target the idempotency keys sent.
exports = Table(
    "exports",
    metadata,
    Column("export_id", String(64), primary_key=True),
    Column("target", String(16), nullable=False),
    Column("selection", String(255), nullable=False),
    Column("destination", String(1000), nullable=False),
    Column("items", Integer, nullable=False),
    Column("new_items", Integer, nullable=False),
    Column("new_only", Boolean, nullable=False),
    Column("exported_at", UTCDateTime(), nullable=False),
)

export_ledger = Table(
    "export_ledger",
    metadata,
    Column("target", String(16), primary_key=True),
    Column("item_key", String(64), primary_key=True),
    Column("item", String(255), nullable=False),
    Column("export_id", String(64), nullable=False),
    Column("exported_at", UTCDateTime(), nullable=False),
    Index("ix_export_ledger_export", "export_id"),
)
