"""`metering export`: usage lines (or closed invoices' lines) in a target's shape.

Pure part: each item's idempotency key, derived from what the item is (a usage line:
its run, key and hour; an invoice line: its invoice and number), never from a
database id or the clock, so exporting twice gives the same keys and a target that
deduplicates on them (Lago transaction_id, Stripe identifier, OpenMeter id + source)
counts each item once; and the target shapes. Shell: `execute` reads the items,
leaves out those the ledger holds for the target with --new-only, writes the output
(a file replaced atomically, or stdout), and only then records the export and the
new keys in the ledger: an export that failed to write is not remembered as sent.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from metering.core.rating import month_bounds
from metering.errors import MeteringError, UsageError
from metering.lock import contention_errors
from metering.store import exports as store
from metering.store import invoices as store_invoices
from metering.store.exports import ExportRecord, UsageLineRow
from metering.timeutil import iso, parse_time, to_ms

TARGETS = ("jsonl", "csv", "lago", "stripe", "openmeter")
USAGE_LINES = "usage"
INVOICE_LINES = "invoice"
LAGO_BATCH = 100  # Lago's batch endpoint takes at most 100 events per request
SOURCE = "metering"  # OpenMeter deduplicates on (id, source)
USAGE_COLUMNS = (
    "key",
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
INVOICE_COLUMNS = (
    "key",
    "invoice_id",
    "account",
    "month",
    "currency",
    "line_no",
    "kind",
    "entity",
    "offering",
    "unit",
    "quantity",
    "per",
    "unit_price",
    "amount",
    "adjusts_invoice",
)


class NotFound(MeteringError):
    """The run or closed month asked for does not exist (exit 1)."""


@dataclass(frozen=True)
class Item:
    key: str
    item: str  # what it is, for the ledger: "usage line 42", "invoice inv-...#3"
    record: dict[str, Any]


@dataclass(frozen=True)
class ExportRequest:
    target: str
    month: str | None = None
    run_id: str | None = None
    lines: str = USAGE_LINES
    new_only: bool = False


@dataclass(frozen=True)
class ExportOutcome:
    export_id: str
    items: int
    new_items: int


# -- keys and shapes (pure) -------------------------------------------------------------


def _digest(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def usage_item(line: UsageLineRow) -> Item:
    when = iso(line.period_start) or ""
    key = _digest(
        "mtr-u-",
        line.run_id,
        line.account,
        line.entity,
        line.resource_id,
        line.offering,
        line.unit,
        when,
        line.source,
    )
    record = {
        "key": key,
        "run_id": line.run_id,
        "account": line.account,
        "entity": line.entity,
        "resource_id": line.resource_id,
        "offering": line.offering,
        "unit": line.unit,
        "period_start": when,
        "quantity": f"{line.quantity:f}",
        "source": line.source,
    }
    return Item(key, f"usage line {line.id}", record)


def invoice_item(invoice: store_invoices.InvoiceRow, line: store_invoices.InvoiceLineRow) -> Item:
    key = _digest("mtr-i-", invoice.invoice_id, str(line.line_no))
    amount = None
    if line.amount is not None:
        # Lines of an invoice rounded as a whole keep their exact amount (10 places).
        exact = invoice.rounding_per == "invoice" and line.kind == "usage"
        amount = f"{line.amount if exact else line.amount.quantize(Decimal(invoice.precision)):f}"
    record = {
        "key": key,
        "invoice_id": invoice.invoice_id,
        "account": invoice.account,
        "month": invoice.month,
        "currency": invoice.currency,
        "line_no": line.line_no,
        "kind": line.kind,
        "entity": line.entity,
        "offering": line.offering,
        "unit": line.unit,
        "quantity": None if line.quantity is None else f"{line.quantity:f}",
        "per": line.per,
        "unit_price": None if line.unit_price is None else f"{line.unit_price.normalize():f}",
        "amount": amount,
        "adjusts_invoice": line.adjusts_invoice,
    }
    return Item(key, f"invoice {invoice.invoice_id}#{line.line_no}", record)


def metric_code(record: dict[str, Any]) -> str:
    """'vm.medium.second', 'ip.byte': one meter (billable metric) per priced usage."""
    parts = [record["entity"], record["offering"], record["unit"]]
    return ".".join(p for p in parts if p)


def _epoch_seconds(when: str) -> int:
    return to_ms(parse_time(when)) // 1000


def lago_event(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "transaction_id": record["key"],
        "external_subscription_id": record["account"],
        "code": metric_code(record).replace(".", "_"),
        "timestamp": _epoch_seconds(record["period_start"]),
        "properties": {
            "quantity": record["quantity"],
            "resource_id": record["resource_id"],
            "offering": record["offering"],
            "unit": record["unit"],
            "period_start": record["period_start"],
            "run_id": record["run_id"],
        },
    }


def stripe_event(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_name": metric_code(record),
        "identifier": record["key"],
        "timestamp": _epoch_seconds(record["period_start"]),
        "payload": {"stripe_customer_id": record["account"], "value": record["quantity"]},
    }


def openmeter_event(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": record["key"],
        "source": SOURCE,
        "type": f"{record['entity']}.{record['unit']}",
        "subject": record["account"],
        "time": record["period_start"],
        "data": {
            "quantity": record["quantity"],
            "offering": record["offering"],
            "resource_id": record["resource_id"],
            "run_id": record["run_id"],
        },
    }


def render(items: Sequence[Item], target: str, lines: str) -> str:
    """The items in the target's shape: JSON lines (Lago: one batch request body per
    line, at most 100 events each), or CSV with a header."""
    records = [i.record for i in items]
    if target == "csv":
        buffer = io.StringIO()
        columns = USAGE_COLUMNS if lines == USAGE_LINES else INVOICE_COLUMNS
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    if target == "lago":
        batches = [records[i : i + LAGO_BATCH] for i in range(0, len(records), LAGO_BATCH)]
        objects = [{"events": [lago_event(r) for r in batch]} for batch in batches]
    elif target == "stripe":
        objects = [stripe_event(r) for r in records]
    elif target == "openmeter":
        objects = [openmeter_event(r) for r in records]
    else:
        objects = records
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)


# -- the shell --------------------------------------------------------------------------


def write_file(path: Path) -> Callable[[str], None]:
    """A writer replacing `path` atomically: a reader never sees half an export."""

    def write(text: str) -> None:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    return write


def _items(engine: Engine, request: ExportRequest) -> tuple[str, list[Item]]:
    with engine.connect() as conn, conn.begin():
        if request.run_id is not None:
            if not store.run_exists(conn, request.run_id):
                raise NotFound(f"no run {request.run_id!r} (metering runs lists them)")
            return f"run {request.run_id} usage", [
                usage_item(line) for line in store.run_lines(conn, request.run_id)
            ]
        assert request.month is not None
        start, end = month_bounds(request.month)
        if request.lines == USAGE_LINES:
            return f"month {request.month} usage", [
                usage_item(line) for line in store.month_lines(conn, start, end)
            ]
        if request.month not in store_invoices.closed(conn):
            raise NotFound(
                f"{request.month} is not closed: only closed invoices are exported "
                "(metering invoice close --month)"
            )
        rows = store_invoices.invoices_of(conn, [request.month])
        lines = store_invoices.lines_of(conn, [r.invoice_id for r in rows])
        return f"month {request.month} invoices", [
            invoice_item(row, line) for row in rows for line in lines.get(row.invoice_id, [])
        ]


def execute(
    engine: Engine,
    request: ExportRequest,
    *,
    now: datetime,
    destination: str,
    write: Callable[[str], None],
) -> ExportOutcome:
    if (request.month is None) == (request.run_id is None):
        raise UsageError("give exactly one of --month M and --run RUN_ID")
    if request.target not in TARGETS:
        raise UsageError(f"unknown target {request.target!r}")
    if request.lines == INVOICE_LINES and (
        request.run_id or request.target not in ("jsonl", "csv")
    ):
        raise UsageError(
            "--lines invoice goes with --month and --to jsonl or csv: Lago, Stripe and "
            "OpenMeter rate usage themselves"
        )
    if request.month is not None:
        try:
            month_bounds(request.month)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    selection, items = _items(engine, request)
    with engine.connect() as conn, conn.begin():
        known = store.exported(conn, request.target, [i.key for i in items])
    chosen = [i for i in items if i.key not in known] if request.new_only else items
    text = render(chosen, request.target, request.lines)
    write(text)
    new = list({i.key: i.item for i in chosen if i.key not in known}.items())
    record = ExportRecord(
        export_id=f"exp-{uuid.uuid4().hex}",
        target=request.target,
        selection=selection + (" (new only)" if request.new_only else ""),
        destination=destination,
        items=len(chosen),
        new_items=len(new),
        new_only=request.new_only,
        exported_at=now,
    )
    with engine.begin() as conn, contention_errors("export"):
        store.record(conn, record, new)
    return ExportOutcome(record.export_id, len(chosen), len(new))
