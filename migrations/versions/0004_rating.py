"""Rating: price book versions, closed months, immutable invoices, the export ledger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from metering.store.ddl import table_options
from metering.store.types import Money, Quantity, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    opts = table_options(op.get_bind())
    op.create_table(
        "price_versions",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("source", sa.String(255), nullable=True),
        sa.Column("loaded_at", UTCDateTime(), nullable=False),
        **opts,
    )
    op.create_index("ix_price_versions_valid_from", "price_versions", ["valid_from"])

    op.create_table(
        "closed_months",
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("closed_at", UTCDateTime(), nullable=False),
        sa.Column("billed_until", UTCDateTime(), nullable=False),
        sa.Column("last_line_id", sa.BigInteger, nullable=False),
        sa.Column("invoices", sa.Integer, nullable=False),
        **opts,
    )

    op.create_table(
        "invoices",
        sa.Column("invoice_id", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("usage_total", Money(), nullable=False),
        sa.Column("total", Money(), nullable=False),
        sa.Column("precision", sa.String(40), nullable=False),
        sa.Column("rounding_mode", sa.String(16), nullable=False),
        sa.Column("rounding_per", sa.String(8), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("account", "month", name="uq_invoices_account_month"),
        **opts,
    )
    op.create_index("ix_invoices_month", "invoices", ["month"])

    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", sa.String(64), primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entity", sa.String(32), nullable=True),
        sa.Column("offering", sa.String(64), nullable=True),
        sa.Column("unit", sa.String(16), nullable=True),
        sa.Column("quantity", Quantity(), nullable=True),
        sa.Column("per", sa.String(8), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("price_source", sa.String(8), nullable=True),
        sa.Column("unit_price", Money(), nullable=True),
        sa.Column("tiers", sa.Text, nullable=True),
        sa.Column("amount", Money(), nullable=True),
        sa.Column("period_from", UTCDateTime(), nullable=True),
        sa.Column("period_to", UTCDateTime(), nullable=True),
        sa.Column("adjusts_invoice", sa.String(64), nullable=True),
        sa.Column("adjusts_month", sa.String(7), nullable=True),
        sa.Column("after_line_id", sa.BigInteger, nullable=True),
        sa.Column("note", sa.String(255), nullable=True),
        **opts,
    )

    op.create_table(
        "exports",
        sa.Column("export_id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("selection", sa.String(255), nullable=False),
        sa.Column("destination", sa.String(1000), nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("new_items", sa.Integer, nullable=False),
        sa.Column("new_only", sa.Boolean, nullable=False),
        sa.Column("exported_at", UTCDateTime(), nullable=False),
        **opts,
    )

    op.create_table(
        "export_ledger",
        sa.Column("target", sa.String(16), primary_key=True),
        sa.Column("item_key", sa.String(64), primary_key=True),
        sa.Column("item", sa.String(255), nullable=False),
        sa.Column("export_id", sa.String(64), nullable=False),
        sa.Column("exported_at", UTCDateTime(), nullable=False),
        **opts,
    )
    op.create_index("ix_export_ledger_export", "export_ledger", ["export_id"])


def downgrade() -> None:
    for table in (
        "export_ledger",
        "exports",
        "invoice_lines",
        "invoices",
        "closed_months",
        "price_versions",
    ):
        op.drop_table(table)
