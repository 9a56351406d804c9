"""Gap strides: an event_gaps row holds the ids x in [id_from, id_to] with
(x - id_from) % step < width, so interleaved ids (a Galera cluster's
auto_increment_increment) cost a few rows, not one per missing id. Existing rows
become contiguous ranges (step = width = 1).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_gaps") as batch:
        batch.add_column(sa.Column("step", sa.BigInteger, nullable=False, server_default="1"))
        batch.add_column(sa.Column("width", sa.BigInteger, nullable=False, server_default="1"))


def downgrade() -> None:
    # A strided row as the contiguous rows it stands for would be one row per block:
    # the gaps are dropped instead (their ids are then never re-read, like ids whose
    # settle lag has passed; `metering run --since` recovers what they held).
    op.execute(sa.text("DELETE FROM event_gaps WHERE step <> width"))
    with op.batch_alter_table("event_gaps") as batch:
        batch.drop_column("width")
        batch.drop_column("step")
