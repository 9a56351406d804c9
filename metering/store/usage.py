"""usage_lines (what was billed) and pending_usage (measured, hour not closed yet)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement, TextClause

from metering.core.events import QuantityKey, ResourceKey
from metering.store.bulk import insert_rows
from metering.store.keys import MANY, key_match, key_table, same_key
from metering.store.schema import pending_usage, usage_lines
from metering.store.sums import grouped_sums
from metering.timeutil import from_ms, to_ms

RUNNING = "running"
MEASURE = "measure"
SECOND = "second"
_MS = Decimal(1000)


@dataclass(frozen=True, slots=True)
class Line:
    account: str
    entity: str
    resource_id: str
    offering: str
    unit: str
    hour: int  # ms
    quantity: Decimal
    source: str


def running_line(key: ResourceKey, offering: str, hour: int, ms: int) -> Line:
    return Line(key[0], key[1], key[2], offering, SECOND, hour, Decimal(ms) / _MS, RUNNING)


def measure_line(key: QuantityKey, hour: int, amount: int) -> Line:
    return Line(key[0], key[1], key[2], "", key[3], hour, Decimal(amount), MEASURE)


LINE_COLUMNS = (
    "run_id",
    "account",
    "entity",
    "resource_id",
    "offering",
    "unit",
    "period_start",
    "quantity",
    "source",
)


def insert_lines(conn: Connection, run_id: str, lines: Iterable[Line]) -> int:
    rows = (
        (
            run_id,
            line.account,
            line.entity,
            line.resource_id,
            line.offering,
            line.unit,
            from_ms(line.hour),
            line.quantity,
            line.source,
        )
        for line in lines
    )
    return insert_rows(conn, usage_lines, LINE_COLUMNS, rows)


def insert_measure_lines(
    conn: Connection,
    run_id: str,
    sums: Mapping[tuple[QuantityKey, int], int],
    keys: Iterable[tuple[QuantityKey, int]],
) -> int:
    """measure_line(key, hour, sums[(key, hour)]) for each of `keys`, written as
    insert_lines writes it but without a Line apiece: a day of 1M events is ~550k."""
    starts: dict[int, datetime] = {}

    def row(key: QuantityKey, hour: int) -> tuple[Any, ...]:
        start = starts.get(hour)
        if start is None:
            start = starts[hour] = from_ms(hour)
        amount = Decimal(sums[(key, hour)])
        return (run_id, key[0], key[1], key[2], "", key[3], start, amount, MEASURE)

    return insert_rows(conn, usage_lines, LINE_COLUMNS, (row(key, hour) for key, hour in keys))


def billed_running(
    conn: Connection, keys: Sequence[ResourceKey], start: int, end: int
) -> dict[ResourceKey, dict[tuple[str, int], int]]:
    """Milliseconds already billed per resource, per (offering, hour) in [start, end)."""
    billed: dict[ResourceKey, dict[tuple[str, int], int]] = {key: {} for key in keys}
    if start >= end:
        return billed
    c = usage_lines.c

    def add(match: ColumnElement[bool] | TextClause) -> None:
        for (a, e, r, offering, hour), amount in grouped_sums(
            conn,
            (c.account, c.entity, c.resource_id, c.offering, c.period_start),
            c.quantity,
            match,
            c.source == RUNNING,
            c.period_start >= from_ms(start),
            c.period_start < from_ms(end),
        ):
            ms = int(amount * _MS)
            if ms:
                billed[(a, e, r)][(offering, to_ms(hour))] = ms

    if len(keys) > MANY:
        with key_table(conn, keys) as wanted:
            add(same_key(usage_lines, wanted))
        return billed
    for first in range(0, len(keys), MANY):
        add(key_match(keys[first : first + MANY]))
    return billed


def billed_measures(conn: Connection, start: int, end: int) -> dict[tuple[QuantityKey, int], int]:
    """Units already billed per (account, entity, resource_id, unit) and hour in [start, end)."""
    c = usage_lines.c
    billed: dict[tuple[QuantityKey, int], int] = {}
    for (a, e, r, unit, hour), amount in grouped_sums(
        conn,
        (c.account, c.entity, c.resource_id, c.unit, c.period_start),
        c.quantity,
        c.source == MEASURE,
        c.period_start >= from_ms(start),
        c.period_start < from_ms(end),
    ):
        if amount:
            billed[((a, e, r, unit), to_ms(hour))] = int(amount)
    return billed


def take_pending(conn: Connection, before: int) -> dict[tuple[QuantityKey, int], int]:
    """Remove and return the pending measure parts of hours before `before`."""
    cutoff = from_ms(before)
    c = pending_usage.c
    parts = {
        ((a, e, r, u), to_ms(h)): int(q)
        for (a, e, r, u, h), q in grouped_sums(
            conn, (c.account, c.entity, c.resource_id, c.unit, c.hour), c.quantity, c.hour < cutoff
        )
    }
    if parts:
        conn.execute(delete(pending_usage).where(c.hour < cutoff))
    return parts


def add_pending(conn: Connection, parts: dict[tuple[QuantityKey, int], int]) -> None:
    rows = (
        (key[0], key[1], key[2], key[3], from_ms(hour), amount)
        for (key, hour), amount in parts.items()
        if amount
    )
    insert_rows(
        conn, pending_usage, ("account", "entity", "resource_id", "unit", "hour", "quantity"), rows
    )


def latest_hour(conn: Connection) -> int | None:
    """The newest hour any line bills (the period_start index's last entry)."""
    newest = conn.execute(select(func.max(usage_lines.c.period_start))).scalar()
    return None if newest is None else to_ms(newest)


def any_lines(conn: Connection) -> bool:
    return conn.execute(select(usage_lines.c.id).limit(1)).first() is not None


def lines_of_runs(conn: Connection, run_ids: Sequence[str]) -> list[Line]:
    if not run_ids:
        return []
    c = usage_lines.c
    # By key, not as written: the order a run writes its kinds of lines in is its own.
    order = (c.account, c.entity, c.resource_id, c.offering, c.unit, c.period_start, c.id)
    query = select(usage_lines).where(c.run_id.in_(run_ids)).order_by(*order)
    return [
        Line(
            r.account,
            r.entity,
            r.resource_id,
            r.offering,
            r.unit,
            to_ms(r.period_start),
            r.quantity,
            r.source,
        )
        for r in conn.execute(query)
    ]
