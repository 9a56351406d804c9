"""What export reads (usage lines with their ids and runs) and the export ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from metering.store.schema import export_ledger, exports, runs, usage_lines


@dataclass(frozen=True, slots=True)
class UsageLineRow:
    id: int
    run_id: str
    account: str
    entity: str
    resource_id: str
    offering: str
    unit: str
    period_start: datetime
    quantity: Decimal
    source: str


@dataclass(frozen=True, slots=True)
class ExportRecord:
    export_id: str
    target: str
    selection: str
    destination: str
    items: int
    new_items: int
    new_only: bool
    exported_at: datetime


def usage(conn: Connection, *where: ColumnElement[bool]) -> list[UsageLineRow]:
    c = usage_lines.c
    query = select(
        c.id,
        c.run_id,
        c.account,
        c.entity,
        c.resource_id,
        c.offering,
        c.unit,
        c.period_start,
        c.quantity,
        c.source,
    ).where(*where)
    return [UsageLineRow(int(r[0]), *r[1:]) for r in conn.execute(query.order_by(c.id))]


def month_lines(conn: Connection, start: datetime, end: datetime) -> list[UsageLineRow]:
    c = usage_lines.c
    return usage(conn, c.period_start >= start, c.period_start < end)


def run_lines(conn: Connection, run_id: str) -> list[UsageLineRow]:
    return usage(conn, usage_lines.c.run_id == run_id)


def run_exists(conn: Connection, run_id: str) -> bool:
    return conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is not None


def exported(conn: Connection, target: str, keys: Sequence[str]) -> set[str]:
    """Which of these keys the ledger holds for this target."""
    found: set[str] = set()
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        query = select(export_ledger.c.item_key).where(
            export_ledger.c.target == target, export_ledger.c.item_key.in_(chunk)
        )
        found.update(conn.execute(query).scalars())
    return found


def record(conn: Connection, export: ExportRecord, new: Sequence[tuple[str, str]]) -> None:
    """The export, and (key, item) of each item the ledger did not hold for its target."""
    conn.execute(insert(exports).values(**{k: getattr(export, k) for k in export.__slots__}))
    if new:
        conn.execute(
            insert(export_ledger),
            [
                {
                    "target": export.target,
                    "item_key": key,
                    "item": item,
                    "export_id": export.export_id,
                    "exported_at": export.exported_at,
                }
                for key, item in new
            ],
        )
