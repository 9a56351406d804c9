"""Helpers shared by the database-level tests: events in, runs, billed sums out."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck
from sqlalchemy import Engine, insert, select

from metering import migrate
from metering.db import make_engine
from metering.run import RunOutcome, RunRequest, execute
from metering.store import ingest as store_ingest
from metering.store.schema import metering_state, rejected_events, usage_events, usage_lines
from metering.store.types import to_decimal
from metering.timeutil import parse_time

EVENT_COLUMNS = store_ingest.EVENT_COLUMNS

BilledKey = tuple[
    str, str, str, str, str, datetime
]  # account, entity, resource_id, offering, unit, hour


def t(text: str) -> datetime:
    return parse_time(text)


def migrated(url: str) -> Engine:
    engine = make_engine(url)
    migrate.upgrade(engine)
    return engine


def event(**values: Any) -> dict[str, Any]:
    """A full usage_events row; times may be given as ISO strings."""
    row: dict[str, Any] = {column: None for column in EVENT_COLUMNS}
    row.update(values)
    for column in ("occurred_at", "period_start", "period_end"):
        if isinstance(row[column], str):
            row[column] = parse_time(row[column])
    if row["occurred_at"] is None:
        row["occurred_at"] = row["period_end"] or row["period_start"]
    return row


def resource(
    event_id: str,
    action: str,
    when: str,
    *,
    account: str = "acme",
    entity: str = "vm",
    resource_id: str = "vm-1",
    offering: str | None = None,
) -> dict[str, Any]:
    return event(
        event_id=event_id,
        kind="resource",
        entity=entity,
        action=action,
        account=account,
        resource_id=resource_id,
        offering=offering,
        occurred_at=when,
    )


def measure(
    event_id: str,
    quantity: int | None,
    start: str,
    end: str,
    *,
    account: str = "acme",
    entity: str = "ip",
    resource_id: str = "10.0.0.1",
    unit: str | None = "byte",
) -> dict[str, Any]:
    return event(
        event_id=event_id,
        kind="quantity",
        entity=entity,
        action="measure",
        account=account,
        resource_id=resource_id,
        quantity=quantity,
        unit=unit,
        period_start=start,
        period_end=end,
        occurred_at=end,
    )


def insert_events(engine: Engine, rows: Iterable[Mapping[str, Any]]) -> None:
    rows = [dict(r) for r in rows]
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(usage_events), rows)


def run(engine: Engine, now: str | datetime, tmp_path: Path, **options: Any) -> RunOutcome:
    """One `metering run` through the shell, with its own lock file under tmp_path."""
    when = parse_time(now) if isinstance(now, str) else now
    request = RunRequest(
        now=when, **{k: v for k, v in options.items() if k in RunRequest.__dataclass_fields__}
    )
    extra = {k: v for k, v in options.items() if k not in RunRequest.__dataclass_fields__}
    return execute(engine, request, lock_file=tmp_path / "metering.lock", **extra)


def billed(engine: Engine) -> dict[BilledKey, Decimal]:
    """SUM(quantity) per key, zero sums dropped: what the contract calls the billed amount.

    Added up here from the stored values: SQLite's own SUM goes through a double."""
    lines = usage_lines.c
    query = select(
        lines.account,
        lines.entity,
        lines.resource_id,
        lines.offering,
        lines.unit,
        lines.period_start,
        lines.quantity,
    )
    sums: dict[BilledKey, Decimal] = defaultdict(Decimal)
    with engine.connect() as conn:
        for a, e, r, o, u, hour, quantity in conn.execute(query):
            sums[(a, e, r, o, u, hour)] += to_decimal(quantity)
    return {k: v for k, v in sums.items() if v != 0}


# Hypothesis settings of the database property tests: each example empties a database
# that a function-scoped fixture made once, and examples take their time.
PROPERTY_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


class Database:
    """One migrated database per test function, emptied between examples."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.connect() as conn:
            self.initial_state = dict(conn.execute(select(metering_state)).mappings().one())
        reflected = sa.MetaData()
        reflected.reflect(engine)
        self.tables = [name for name in reflected.tables if name != "alembic_version"]

    def reset(self) -> None:
        with self.engine.begin() as conn:
            for name in self.tables:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql(f'DELETE FROM "{name}"')
                else:
                    conn.exec_driver_sql(f"TRUNCATE TABLE `{name}`")
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DELETE FROM sqlite_sequence")
            conn.execute(sa.insert(metering_state).values(**self.initial_state))

    def deliver(self, rows: list[dict[str, Any]]) -> None:
        """Insert, skipping event_ids already stored (a redelivery), in one transaction."""
        with self.engine.begin() as conn:
            store_ingest.insert_events(conn, rows)

    def stored(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(usage_events).order_by(usage_events.c.id)).mappings()
            return [dict(r) for r in rows]

    def billed_until(self) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(metering_state.c.billed_until)).scalar_one()
            return value  # type: ignore[no-any-return]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.engine.connect() as conn:
            return {
                name: sorted(
                    (tuple(map(str, r)) for r in conn.exec_driver_sql(f"SELECT * FROM {name}")),
                )
                for name in self.tables
            }

    def rejected_ids(self) -> Counter[str]:
        with self.engine.connect() as conn:
            query = select(rejected_events.c.event_id).where(
                rejected_events.c.category == "rejected"
            )
            return Counter(conn.execute(query).scalars())


def read_terminal(leader: int) -> bytes:
    """Everything a child wrote to a pseudo-terminal, until it closed it (the read then
    fails with EIO); closes `leader`."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks)
