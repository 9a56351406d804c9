"""Exact quantities: usage lines and pending measure parts hold 28 digits.

A key-hour of many large measures overflowed pending_usage's BIGINT and
usage_lines' DECIMAL(20,3) (10^17): one producer's volume stopped every run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from metering.store.types import Quantity, WholeQuantity

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_lines") as batch:
        batch.alter_column(
            "quantity",
            type_=Quantity(),
            existing_type=sa.Numeric(20, 3),
            existing_nullable=False,
        )
    with op.batch_alter_table("pending_usage") as batch:
        batch.alter_column(
            "quantity",
            type_=WholeQuantity(),
            existing_type=sa.BigInteger(),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("pending_usage") as batch:
        batch.alter_column("quantity", type_=sa.BigInteger(), existing_nullable=False)
    with op.batch_alter_table("usage_lines") as batch:
        batch.alter_column("quantity", type_=sa.Numeric(20, 3), existing_nullable=False)
