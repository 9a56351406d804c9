"""`metering invoice preview | close | show`: the shell around metering.core.rating.

gather (usage lines summed per key-hour, price versions, what closed invoices hold) ->
rate (pure) -> write (close only: the closed month, its invoices and lines, in one
transaction under the run's locks, so no run commits lines while the month's cut is
taken).

A closed month's invoices never change. Usage that reaches a closed month later is
re-rated with the same versions (none may start inside a closed month) and the
difference from what was invoiced goes to the next month that is not closed, as an
adjustment line naming the closed invoice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from metering.core.rating import (
    Adjustment,
    Invoiced,
    Rated,
    RatedLine,
    Rounding,
    Version,
    adjustment,
    human,
    in_force,
    invoice_id,
    month_bounds,
    previous_month,
    rate_month,
)
from metering.db import write_lock
from metering.errors import MeteringError, UsageError
from metering.lock import contention_errors, run_lock
from metering.prices import stored_versions
from metering.store import invoices as store
from metering.store import state as store_state
from metering.store.invoices import ClosedMonth, InvoiceLineRow, InvoiceRow, TracedLine
from metering.timeutil import from_ms, iso, to_ms

USAGE = "usage"
UNPRICED = "unpriced"
ADJUSTMENT = "adjustment"
PREVIEW = "preview"
CLOSED = "closed"


class InvoiceError(MeteringError):
    """A month that cannot be closed, an unknown invoice (exit 1)."""


@dataclass(frozen=True)
class AccountInvoice:
    """One account's invoice for a month: computed (preview) or as closed."""

    account: str
    month: str
    currency: str
    invoice_id: str | None  # set once closed
    lines: tuple[InvoiceLineRow, ...]
    total: Decimal
    rounding: Rounding | None


@dataclass(frozen=True)
class MonthInvoices:
    month: str
    status: str  # preview or closed
    billed_until: datetime | None
    fully_billed: bool
    accounts: tuple[AccountInvoice, ...]


@dataclass(frozen=True)
class CloseOutcome:
    invoices: MonthInvoices
    already: bool


@dataclass(frozen=True)
class TracedInvoiceLine:
    line: InvoiceLineRow
    usage: tuple[TracedLine, ...]

    @property
    def run_ids(self) -> list[str]:
        return sorted({u.run_id for u in self.usage})


@dataclass(frozen=True)
class InvoiceDetail:
    invoice: AccountInvoice
    closed_at: datetime
    traced: tuple[TracedInvoiceLine, ...] = field(default_factory=tuple)


def check_month(month: str) -> tuple[datetime, datetime]:
    try:
        return month_bounds(month)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- gather and rate -------------------------------------------------------------------


def _rounding(row: InvoiceRow) -> Rounding:
    return Rounding(Decimal(row.precision), row.rounding_mode, row.rounding_per)


def _invoiced(
    conn: Connection,
    months: Sequence[str],
    closed: dict[str, ClosedMonth],
    accounts: Sequence[str],
) -> dict[tuple[str, str], Invoiced]:
    """Per (account, closed month): what its invoice and later adjustments hold."""
    amount: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    unpriced: dict[tuple[str, str], dict[tuple[str, str, str], Decimal]] = defaultdict(dict)
    cut: dict[tuple[str, str], int] = {}
    ids: dict[tuple[str, str], str] = {}
    rows = store.invoices_of(conn, months, accounts)
    lines = store.lines_of(conn, [r.invoice_id for r in rows])
    for row in rows:
        key = (row.account, row.month)
        ids[key] = row.invoice_id
        amount[key] += row.usage_total
        for line in lines.get(row.invoice_id, []):
            if line.kind == UNPRICED and line.adjusts_month is None:
                _add(unpriced[key], line)
    for account, holder, line in store.adjustments_for(conn, months, accounts):
        assert line.adjusts_month is not None
        key = (account, line.adjusts_month)
        cut[key] = max(cut.get(key, 0), closed[holder].last_line_id)
        if line.kind == UNPRICED:
            _add(unpriced[key], line)
        elif line.amount is not None:
            amount[key] += line.amount
    return {
        key: Invoiced(
            month=key[1],
            invoice_id=ids.get(key),
            amount=amount[key],
            unpriced=unpriced[key],
            last_line_id=max(cut.get(key, 0), closed[key[1]].last_line_id),
        )
        for key in set(amount) | set(unpriced) | set(ids) | set(cut)
    }


def _add(into: dict[tuple[str, str, str], Decimal], line: InvoiceLineRow) -> None:
    assert line.entity is not None and line.offering is not None and line.unit is not None
    key = (line.entity, line.offering, line.unit)
    into[key] = into.get(key, Decimal(0)) + (line.quantity or Decimal(0))


def _pending_months(month: str, closed: dict[str, ClosedMonth]) -> list[str]:
    """The closed months whose late usage `month` settles: those before it with only
    closed months in between (late usage goes to the first month not closed)."""
    found = []
    current = previous_month(month)
    while current in closed:
        found.append(current)
        current = previous_month(current)
    return found


def _rate(
    conn: Connection,
    month: str,
    versions: Sequence[Version],
    accounts: Sequence[str],
    up_to_line: int | None,
) -> dict[str, Rated]:
    start, end = month_bounds(month)
    usage = store.month_usage(conn, start, end, accounts, up_to_line)
    return {
        account: rate_month(account, hours, versions, to_ms(start), to_ms(end))
        for account, hours in sorted(usage.items())
    }


def _tiers_text(line: RatedLine) -> str:
    return json.dumps(
        [
            {
                "from": str(t.start),
                "up_to": None if t.up_to is None else str(t.up_to),
                "price": str(t.price),
                "quantity": human(t.quantity),
            }
            for t in line.tiers
        ]
    )


def _lines(
    rated: Rated | None, adjustments: Sequence[Adjustment], invoice: str
) -> tuple[InvoiceLineRow, ...]:
    out: list[InvoiceLineRow] = []
    for line in rated.lines if rated else ():
        out.append(
            InvoiceLineRow(
                invoice,
                0,
                USAGE,
                entity=line.entity,
                offering=line.offering,
                unit=line.unit,
                quantity=line.quantity,
                per=line.per,
                version=line.version,
                price_source=line.source,
                unit_price=line.unit_price,
                tiers=_tiers_text(line),
                amount=line.amount,
                period_from=from_ms(line.period_from),
                period_to=from_ms(line.period_to),
            )
        )
    for item in rated.unpriced if rated else ():
        out.append(
            InvoiceLineRow(
                invoice,
                0,
                UNPRICED,
                entity=item.entity,
                offering=item.offering,
                unit=item.unit,
                quantity=item.quantity,
                note=item.reason,
            )
        )
    for adj in adjustments:
        closed_name = adj.invoice_id or f"closed month {adj.month} (no invoice)"
        if adj.amount != 0:
            out.append(
                InvoiceLineRow(
                    invoice,
                    0,
                    ADJUSTMENT,
                    amount=adj.amount,
                    adjusts_invoice=adj.invoice_id,
                    adjusts_month=adj.month,
                    after_line_id=adj.after_line_id,
                    note=f"{'debit' if adj.amount > 0 else 'credit'}: usage of {adj.month} "
                    f"billed after {closed_name} was closed",
                )
            )
        for item in adj.unpriced:
            out.append(
                InvoiceLineRow(
                    invoice,
                    0,
                    UNPRICED,
                    entity=item.entity,
                    offering=item.offering,
                    unit=item.unit,
                    quantity=item.quantity,
                    adjusts_invoice=adj.invoice_id,
                    adjusts_month=adj.month,
                    after_line_id=adj.after_line_id,
                    note=f"late usage of {adj.month}, after {closed_name} was closed",
                )
            )
    return tuple(replace(line, line_no=i) for i, line in enumerate(out, start=1))


def _compute(
    conn: Connection, month: str, accounts: Sequence[str], up_to_line: int | None
) -> list[AccountInvoice]:
    closed = store.closed(conn)
    versions = stored_versions(conn)
    rated = _rate(conn, month, versions, accounts, up_to_line)
    pending = _pending_months(month, closed)
    invoiced = _invoiced(conn, pending, closed, accounts)
    adjustments: dict[str, list[Adjustment]] = defaultdict(list)
    for earlier in pending:
        again = _rate(conn, earlier, versions, accounts, up_to_line)
        # An invoiced account may have no usage left (corrected to zero): a full credit.
        for account in sorted(set(again) | {a for a, m in invoiced if m == earlier}):
            before = invoiced.get(
                (account, earlier),
                Invoiced(earlier, None, Decimal(0), {}, closed[earlier].last_line_id),
            )
            now = again.get(account, Rated(account, (), (), None, Decimal(0)))
            adj = adjustment(now, before)
            if adj is not None:
                adjustments[account].append(adj)
    start = to_ms(month_bounds(month)[0])
    currency = versions[-1].book.currency if versions else ""
    policy = in_force(versions, start) or (versions[0] if versions else None)
    out = []
    for account in sorted(set(rated) | set(adjustments)):
        mine = rated.get(account)
        adjs = adjustments.get(account, [])
        lines = _lines(mine, adjs, invoice_id(account, month))
        total = (mine.total if mine else Decimal(0)) + sum((a.amount for a in adjs), Decimal(0))
        rounding = (
            mine.rounding if mine and mine.rounding else (policy.book.rounding if policy else None)
        )
        out.append(AccountInvoice(account, month, currency, None, lines, total, rounding))
    return out


def _stored(conn: Connection, month: str, accounts: Sequence[str]) -> list[AccountInvoice]:
    rows = store.invoices_of(conn, [month], accounts)
    lines = store.lines_of(conn, [r.invoice_id for r in rows])
    return [
        AccountInvoice(
            r.account,
            r.month,
            r.currency,
            r.invoice_id,
            tuple(lines.get(r.invoice_id, [])),
            r.total,
            _rounding(r),
        )
        for r in rows
    ]


def preview(engine: Engine, month: str, accounts: Sequence[str] = ()) -> MonthInvoices:
    """The month's invoices: as closed, or as they would be closed now (a preview)."""
    _, end = check_month(month)
    with engine.connect() as conn, conn.begin():
        billed_until = store_state.read_watermark(conn).billed_until
        until = None if billed_until is None else from_ms(billed_until)
        fully = until is not None and until >= end
        if month in store.closed(conn):
            return MonthInvoices(month, CLOSED, until, fully, tuple(_stored(conn, month, accounts)))
        return MonthInvoices(
            month, PREVIEW, until, fully, tuple(_compute(conn, month, accounts, None))
        )


# -- close -----------------------------------------------------------------------------


def close(
    engine: Engine,
    month: str,
    *,
    now: datetime,
    lock_file: Path,
    wait: float = 0.0,
    use_database_lock: bool = True,
    allow_unpriced: bool = False,
) -> CloseOutcome:
    """Store the month's invoices, once. Refuses a month whose hours are not all billed
    and, unless allowed, one with unpriced usage (a later price cannot reach it)."""
    _, end = check_month(month)
    with (
        run_lock(engine, lock_file, wait=wait, use_database_lock=use_database_lock),
        engine.connect() as raw,
        contention_errors("invoice close"),
    ):
        conn = write_lock(raw)
        with conn.begin():
            closed = store.closed(conn)
            billed = store_state.read_watermark(conn).billed_until
            until = None if billed is None else from_ms(billed)
            if month in closed:
                stored = _stored(conn, month, ())
                return CloseOutcome(MonthInvoices(month, CLOSED, until, True, tuple(stored)), True)
            if until is None or until < end:
                raise InvoiceError(
                    f"{month} is not fully billed: hours are billed until {iso(until) or 'never'}"
                    f", the month ends {iso(end)}; close it after the run that bills its "
                    "last hour"
                )
            cut = store.max_line_id(conn)
            computed = _compute(conn, month, (), cut)
            if any(acc.lines for acc in computed) and not stored_versions(conn):
                raise InvoiceError("no price book is loaded: run metering prices load FILE first")
            unpriced = [
                f"{acc.account} {line.entity}/{line.offering or '-'}/{line.unit} {line.quantity}"
                for acc in computed
                for line in acc.lines
                if line.kind == UNPRICED
            ]
            if unpriced and not allow_unpriced:
                raise InvoiceError(
                    f"{month} has unpriced usage ({'; '.join(unpriced[:5])}"
                    f"{' ...' if len(unpriced) > 5 else ''}): add prices for it, or pass "
                    "--allow-unpriced to close it listed as unpriced"
                )
            rows = []
            for acc in computed:
                assert acc.rounding is not None
                usage_total = acc.total - sum(
                    (line.amount or Decimal(0) for line in acc.lines if line.kind == ADJUSTMENT),
                    Decimal(0),
                )
                rows.append(
                    InvoiceRow(
                        invoice_id=invoice_id(acc.account, month),
                        account=acc.account,
                        month=month,
                        currency=acc.currency,
                        usage_total=usage_total,
                        total=acc.total,
                        precision=str(acc.rounding.step),
                        rounding_mode=acc.rounding.mode,
                        rounding_per=acc.rounding.per,
                        closed_at=now,
                    )
                )
            store.insert_closed(
                conn,
                ClosedMonth(month, now, until, cut, len(rows)),
                rows,
                [line for acc in computed for line in acc.lines],
            )
            stored = _stored(conn, month, ())
    return CloseOutcome(MonthInvoices(month, CLOSED, until, True, tuple(stored)), False)


# -- show ------------------------------------------------------------------------------


def show(engine: Engine, invoice: str, *, trace: bool = False) -> InvoiceDetail:
    """A closed invoice; with trace, each line's usage lines and their run ids."""
    with engine.connect() as conn, conn.begin():
        row = store.invoice(conn, invoice)
        if row is None:
            raise InvoiceError(f"no invoice {invoice!r} (closed months have invoices)")
        lines = store.lines_of(conn, [invoice]).get(invoice, [])
        found = AccountInvoice(
            row.account,
            row.month,
            row.currency,
            row.invoice_id,
            tuple(lines),
            row.total,
            _rounding(row),
        )
        if not trace:
            return InvoiceDetail(found, row.closed_at)
        cut = store.closed(conn)[row.month].last_line_id
        traced = tuple(
            TracedInvoiceLine(line, tuple(_trace(conn, row, line, cut))) for line in lines
        )
        return InvoiceDetail(found, row.closed_at, traced)


def _trace(conn: Connection, row: InvoiceRow, line: InvoiceLineRow, cut: int) -> list[TracedLine]:
    key = None
    if line.entity is not None and line.offering is not None and line.unit is not None:
        key = (line.entity, line.offering, line.unit)
    if line.adjusts_month is not None:
        start, end = month_bounds(line.adjusts_month)
        after = line.after_line_id or 0
    else:
        start, end = month_bounds(row.month)
        after = 0
    if line.period_from is not None and line.period_to is not None:
        start, end = line.period_from, line.period_to
    return store.traced(conn, row.account, start, end, after_line=after, up_to_line=cut, key=key)
