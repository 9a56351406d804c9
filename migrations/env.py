"""Alembic environment: the connection comes from metering's code, never from a
config file, and logging is left to metering (no fileConfig)."""

from __future__ import annotations

from alembic import context

from metering.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `metering db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
