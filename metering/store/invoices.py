"""Reads of usage_lines for rating, and the closed months, invoices and invoice lines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from metering.core.rating import Usage
from metering.store.schema import closed_months, invoice_lines, invoices, usage_lines
from metering.store.sums import grouped_sums
from metering.timeutil import to_ms


@dataclass(frozen=True, slots=True)
class ClosedMonth:
    month: str
    closed_at: datetime
    billed_until: datetime
    last_line_id: int
    invoices: int


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    invoice_id: str
    account: str
    month: str
    currency: str
    usage_total: Decimal
    total: Decimal
    precision: str
    rounding_mode: str
    rounding_per: str
    closed_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceLineRow:
    invoice_id: str
    line_no: int
    kind: str
    entity: str | None = None
    offering: str | None = None
    unit: str | None = None
    quantity: Decimal | None = None
    per: str | None = None
    version: int | None = None
    price_source: str | None = None
    unit_price: Decimal | None = None
    tiers: str | None = None  # JSON text: the tiers applied
    amount: Decimal | None = None
    period_from: datetime | None = None
    period_to: datetime | None = None
    adjusts_invoice: str | None = None
    adjusts_month: str | None = None
    after_line_id: int | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class TracedLine:
    id: int
    run_id: str
    resource_id: str
    entity: str
    offering: str
    unit: str
    period_start: datetime
    quantity: Decimal


def month_usage(
    conn: Connection,
    start: datetime,
    end: datetime,
    accounts: Sequence[str] = (),
    up_to_line: int | None = None,
) -> dict[str, list[Usage]]:
    """Per account, the net quantity of each key-hour in [start, end) (zero nets dropped)."""
    c = usage_lines.c
    where: list[ColumnElement[bool]] = [c.period_start >= start, c.period_start < end]
    if accounts:
        where.append(c.account.in_(accounts))
    if up_to_line is not None:
        where.append(c.id <= up_to_line)
    found: dict[str, list[Usage]] = defaultdict(list)
    keys = [c.account, c.entity, c.offering, c.unit, c.period_start]
    for (account, entity, offering, unit, hour), quantity in grouped_sums(
        conn, keys, c.quantity, *where
    ):
        if quantity != 0:
            found[account].append(Usage(entity, offering, unit, to_ms(hour), quantity))
    return dict(found)


def max_line_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(usage_lines.c.id), 0))).scalar_one())


def closed(conn: Connection) -> dict[str, ClosedMonth]:
    return {
        r.month: ClosedMonth(
            r.month, r.closed_at, r.billed_until, int(r.last_line_id), int(r.invoices)
        )
        for r in conn.execute(select(closed_months))
    }


def _invoice(r: Any) -> InvoiceRow:
    return InvoiceRow(**{f.name: getattr(r, f.name) for f in fields(InvoiceRow)})


def _line(r: Any) -> InvoiceLineRow:
    return InvoiceLineRow(**{f.name: getattr(r, f.name) for f in fields(InvoiceLineRow)})


def invoices_of(
    conn: Connection, months: Sequence[str], accounts: Sequence[str] = ()
) -> list[InvoiceRow]:
    if not months:
        return []
    query = select(invoices).where(invoices.c.month.in_(months))
    if accounts:
        query = query.where(invoices.c.account.in_(accounts))
    return [_invoice(r) for r in conn.execute(query.order_by(invoices.c.account))]


def invoice(conn: Connection, invoice_id: str) -> InvoiceRow | None:
    row = conn.execute(select(invoices).where(invoices.c.invoice_id == invoice_id)).first()
    return None if row is None else _invoice(row)


def lines_of(conn: Connection, invoice_ids: Sequence[str]) -> dict[str, list[InvoiceLineRow]]:
    found: dict[str, list[InvoiceLineRow]] = defaultdict(list)
    if invoice_ids:
        query = (
            select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(invoice_ids))
            .order_by(invoice_lines.c.invoice_id, invoice_lines.c.line_no)
        )
        for r in conn.execute(query):
            found[r.invoice_id].append(_line(r))
    return dict(found)


def adjustments_for(
    conn: Connection, months: Sequence[str], accounts: Sequence[str] = ()
) -> list[tuple[str, str, InvoiceLineRow]]:
    """(account, month of the invoice holding it, line) of the adjustment lines (and late
    unpriced lines) of closed invoices for these months."""
    if not months:
        return []
    query = (
        select(invoices.c.account, invoices.c.month.label("holder"), invoice_lines)
        .join(invoices, invoices.c.invoice_id == invoice_lines.c.invoice_id)
        .where(invoice_lines.c.adjusts_month.in_(months))
    )
    if accounts:
        query = query.where(invoices.c.account.in_(accounts))
    return [(r.account, r.holder, _line(r)) for r in conn.execute(query)]


def insert_closed(
    conn: Connection,
    month: ClosedMonth,
    rows: Sequence[InvoiceRow],
    lines: Sequence[InvoiceLineRow],
) -> None:
    conn.execute(
        insert(closed_months).values(**{f.name: getattr(month, f.name) for f in fields(month)})
    )
    if rows:
        conn.execute(
            insert(invoices), [{f.name: getattr(r, f.name) for f in fields(r)} for r in rows]
        )
    if lines:
        conn.execute(
            insert(invoice_lines),
            [{f.name: getattr(r, f.name) for f in fields(r)} for r in lines],
        )


def traced(
    conn: Connection,
    account: str,
    start: datetime,
    end: datetime,
    *,
    after_line: int,
    up_to_line: int,
    key: tuple[str, str, str] | None = None,
) -> list[TracedLine]:
    """The usage lines behind an invoice line: the account's lines in [start, end) with
    after_line < id <= up_to_line, of one (entity, offering, unit) when key is given."""
    c = usage_lines.c
    query = select(
        c.id, c.run_id, c.resource_id, c.entity, c.offering, c.unit, c.period_start, c.quantity
    ).where(
        c.account == account,
        c.period_start >= start,
        c.period_start < end,
        c.id > after_line,
        c.id <= up_to_line,
    )
    if key is not None:
        query = query.where(c.entity == key[0], c.offering == key[1], c.unit == key[2])
    return [
        TracedLine(
            int(r.id),
            r.run_id,
            r.resource_id,
            r.entity,
            r.offering,
            r.unit,
            r.period_start,
            r.quantity,
        )
        for r in conn.execute(query.order_by(c.id))
    ]
