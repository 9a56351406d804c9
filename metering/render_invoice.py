"""Invoices for people and programs: table, CSV, JSON lines, an HTML page.

Amounts are exact decimal strings in CSV and JSON. Quantities are given twice: in the
usage unit, exact (`quantity`, e.g. seconds), and in the price's unit (`quantity_per`,
e.g. hours; prefixed '~' when it has more than 6 places). Lines of an invoice rounded
as a whole (rounding per = "invoice") show their exact amount to 10 places; the total
alone is rounded.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from fractions import Fraction
from html import escape
from typing import Any

from metering.core.rating import Rounding, human, scale_of
from metering.html import STYLE
from metering.invoice import (
    ADJUSTMENT,
    PREVIEW,
    UNPRICED,
    USAGE,
    AccountInvoice,
    InvoiceDetail,
    MonthInvoices,
)
from metering.render import text_table
from metering.store.invoices import InvoiceLineRow
from metering.timeutil import iso

CSV_COLUMNS = (
    "month",
    "status",
    "account",
    "currency",
    "invoice_id",
    "kind",
    "line_no",
    "entity",
    "offering",
    "unit",
    "quantity",
    "per",
    "quantity_per",
    "unit_price",
    "tiers",
    "amount",
    "adjusts_invoice",
    "note",
)
TABLE_COLUMNS = ("kind", "entity", "offering", "unit", "quantity", "unit price", "tiers", "amount")


def _json_lines(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)


def _csv(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _places(rounding: Rounding | None) -> int:
    exponent = (rounding.step if rounding else Decimal("0.01")).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def money(value: Decimal | None, rounding: Rounding | None, *, exact: bool = False) -> str:
    """An amount to the rounding step's places; `exact`: all its places (at least those)."""
    if value is None:
        return ""
    places = _places(rounding)
    if exact:
        text = f"{value:f}"
        if "." in text:
            whole, fraction = text.split(".")
            fraction = fraction.rstrip("0").ljust(places, "0")
            return f"{whole}.{fraction}" if fraction else whole
        return f"{value:.{places}f}"
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def _plain(value: Decimal | None) -> str:
    return "" if value is None else f"{value.normalize():f}"


def _per_quantity(line: InvoiceLineRow) -> str:
    if line.quantity is None or line.unit is None or line.per is None:
        return ""
    return human(Fraction(line.quantity) / scale_of(line.unit, line.per))


def _tiers(line: InvoiceLineRow) -> list[dict[str, Any]]:
    return [] if not line.tiers else list(json.loads(line.tiers))


def _tiers_text(line: InvoiceLineRow) -> str:
    if line.kind != USAGE:
        return line.note or ""
    uses = _tiers(line)
    if len(uses) == 1 and uses[0]["up_to"] is None and uses[0]["from"] == "0":
        return ""
    parts = []
    for use in uses:
        bound = f"{use['from']}-{use['up_to']}" if use["up_to"] else f"{use['from']}+"
        parts.append(f"{bound} {line.per} @ {use['price']}: {use['quantity']}")
    return "; ".join(parts)


def _amount(line: InvoiceLineRow, invoice: AccountInvoice) -> str:
    if line.kind == UNPRICED:
        return "unpriced"
    per_invoice = invoice.rounding is not None and invoice.rounding.per == "invoice"
    return money(line.amount, invoice.rounding, exact=per_invoice and line.kind == USAGE)


def _status(month: MonthInvoices) -> str:
    if month.status != PREVIEW:
        return "closed"
    if month.fully_billed:
        return "preview: every hour billed, ready to close"
    return (
        f"preview: hours billed until {iso(month.billed_until) or 'never'}, "
        "the month is not fully billed"
    )


def _line_object(
    month: MonthInvoices, invoice: AccountInvoice, line: InvoiceLineRow
) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "month": month.month,
        "status": month.status,
        "account": invoice.account,
        "currency": invoice.currency,
        "invoice_id": invoice.invoice_id,
        "line_no": line.line_no,
        "entity": line.entity,
        "offering": line.offering,
        "unit": line.unit,
        "quantity": None if line.quantity is None else f"{line.quantity:f}",
        "per": line.per,
        "quantity_per": _per_quantity(line) or None,
        "unit_price": _plain(line.unit_price) or None,
        "tiers": _tiers(line),
        "version": line.version,
        "price_source": line.price_source,
        "amount": _amount(line, invoice),
        "adjusts_invoice": line.adjusts_invoice,
        "adjusts_month": line.adjusts_month,
        "note": line.note,
    }


def _total_object(month: MonthInvoices, invoice: AccountInvoice) -> dict[str, Any]:
    return {
        "kind": "total",
        "month": month.month,
        "status": month.status,
        "account": invoice.account,
        "currency": invoice.currency,
        "invoice_id": invoice.invoice_id,
        "amount": money(invoice.total, invoice.rounding),
        "rounding": invoice.rounding.describe() if invoice.rounding else None,
        "unpriced": sum(1 for line in invoice.lines if line.kind == UNPRICED),
    }


def _row(invoice: AccountInvoice, line: InvoiceLineRow) -> list[str]:
    quantity = ""
    if line.quantity is not None:
        per = _per_quantity(line)
        quantity = f"{per} {line.per}" if per else f"{_plain(line.quantity)} {line.unit}"
    price = ""
    if line.unit_price is not None:
        price = f"{_plain(line.unit_price)}/{line.per}"
    elif line.kind == USAGE:
        price = "tiered"
    if line.price_source == "override":
        price += " (override)"
    entity = line.entity or ""
    if line.kind == ADJUSTMENT:
        entity = line.adjusts_invoice or f"month {line.adjusts_month}"
    return [
        line.kind,
        entity,
        line.offering or ("-" if line.entity else ""),
        line.unit or "",
        quantity,
        price,
        _tiers_text(line),
        _amount(line, invoice),
    ]


def _account_table(invoice: AccountInvoice) -> list[str]:
    name = invoice.invoice_id or "(preview)"
    out = [f"{invoice.account} {invoice.currency} {name}"]
    rows = [_row(invoice, line) for line in invoice.lines]
    out += text_table(TABLE_COLUMNS, rows, numeric=("amount",)) if rows else []
    rounding = f" (rounded {invoice.rounding.describe()})" if invoice.rounding else ""
    out.append(f"total {invoice.currency} {money(invoice.total, invoice.rounding)}{rounding}")
    return out


def render_month(month: MonthInvoices, fmt: str) -> str:
    if fmt == "json":
        objects: list[dict[str, Any]] = []
        for invoice in month.accounts:
            objects += [_line_object(month, invoice, line) for line in invoice.lines]
            objects.append(_total_object(month, invoice))
        return _json_lines(objects)
    if fmt == "csv":
        rows = []
        for invoice in month.accounts:
            for line in invoice.lines:
                o = _line_object(month, invoice, line)
                o["tiers"] = _tiers_text(line) if line.kind == USAGE else ""
                rows.append([_cell(o.get(c)) for c in CSV_COLUMNS])
            total = _total_object(month, invoice)
            rows.append([_cell(total.get(c)) for c in CSV_COLUMNS])
        return _csv(CSV_COLUMNS, rows)
    if fmt == "html":
        return _page(month)
    out = [f"invoices {month.month}: {_status(month)}"]
    if not month.accounts:
        out.append("nothing to invoice")
    for invoice in month.accounts:
        out += ["", *_account_table(invoice)]
    return "\n".join(out) + "\n"


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _page(month: MonthInvoices) -> str:
    title = f"invoices {month.month}"
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="status" data-status="{escape(month.status)}">{escape(_status(month))}</p>',
    ]
    for invoice in month.accounts:
        parts.append(
            f'<h2 data-account="{escape(invoice.account, quote=True)}">'
            f"{escape(invoice.account)} ({escape(invoice.currency)})</h2>"
        )
        parts.append("<table><thead><tr>")
        parts += [f"<th>{escape(c)}</th>" for c in TABLE_COLUMNS]
        parts.append("</tr></thead><tbody>")
        for line in invoice.lines:
            cells = _row(invoice, line)
            parts.append(f'<tr class="{escape(line.kind)}">')
            parts += [
                f'<td class="num">{escape(v)}</td>'
                if i == len(cells) - 1
                else f"<td>{escape(v)}</td>"
                for i, v in enumerate(cells)
            ]
            parts.append("</tr>")
        parts.append(
            f'<tr class="total"><td colspan="{len(TABLE_COLUMNS) - 1}">total</td>'
            f'<td class="num" data-amount="{money(invoice.total, invoice.rounding)}">'
            f"{escape(invoice.currency)} {money(invoice.total, invoice.rounding)}</td></tr>"
        )
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_detail(detail: InvoiceDetail, fmt: str) -> str:
    invoice = detail.invoice
    traced = {t.line.line_no: t for t in detail.traced}
    if fmt == "json":
        month = MonthInvoices(invoice.month, "closed", None, True, (invoice,))
        objects = []
        for line in invoice.lines:
            o = _line_object(month, invoice, line)
            if line.line_no in traced:
                t = traced[line.line_no]
                o["run_ids"] = t.run_ids
                o["usage_lines"] = [
                    {
                        "id": u.id,
                        "run_id": u.run_id,
                        "entity": u.entity,
                        "resource_id": u.resource_id,
                        "offering": u.offering,
                        "unit": u.unit,
                        "period_start": iso(u.period_start),
                        "quantity": f"{u.quantity:f}",
                    }
                    for u in t.usage
                ]
            objects.append(o)
        objects.append(_total_object(month, invoice))
        return _json_lines(objects)
    out = [
        f"invoice {invoice.invoice_id}: {invoice.account}, {invoice.month}, closed "
        f"{iso(detail.closed_at)}",
        *_account_table(invoice)[1:],
    ]
    for line in invoice.lines:
        if line.line_no not in traced:
            continue
        t = traced[line.line_no]
        out += [
            "",
            f"line {line.line_no} ({line.kind}): {len(t.usage)} usage line(s), runs "
            f"{', '.join(t.run_ids) or '-'}",
        ]
        out += (
            text_table(
                ("id", "run_id", "resource_id", "period_start", "quantity", "unit"),
                [
                    [
                        str(u.id),
                        u.run_id,
                        u.resource_id,
                        iso(u.period_start) or "",
                        f"{u.quantity:f}",
                        u.unit,
                    ]
                    for u in t.usage
                ],
                numeric=("id", "quantity"),
            )
            if t.usage
            else []
        )
    return "\n".join(out) + "\n"
