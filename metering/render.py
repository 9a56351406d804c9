"""Text renderings: usage lines (dry runs), reports, runs and findings.

Formats: a readable table, CSV, or JSON lines (one object per line, quantities as
exact decimal strings). The HTML page of a report is metering/html.py's. CSV and JSON
carry stored text as it is; tables show its control characters escaped (`printable`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from metering.report import Report, RunDetail
from metering.status import FUTURE_MARGIN, Status
from metering.store.events import DatedEvent
from metering.store.reports import FindingRow, LineRow, UsageSum
from metering.store.runs import RunRecord
from metering.store.status import EventsTable
from metering.store.usage import Line
from metering.timeutil import from_ms, iso
from metering.units import SI, human

COLUMNS = ("account", "entity", "resource_id", "offering", "unit", "period_start", "quantity")

# C0 and C1 controls, DEL, and the bidirectional overrides and isolates: stored text
# that would move the cursor, recolour, erase or reorder a terminal's display.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` for a table: each control character as its Python escape (\\x1b, \\n)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _row(line: Line) -> dict[str, str]:
    return {
        "account": line.account,
        "entity": line.entity,
        "resource_id": line.resource_id,
        "offering": line.offering,
        "unit": line.unit,
        "period_start": iso(from_ms(line.hour)) or "",
        "quantity": f"{line.quantity:.3f}",
    }


def totals(lines: Sequence[Line]) -> dict[tuple[str, str, str], Decimal]:
    """Per (account, entity, unit): the sum of quantities (two entities' seconds are
    never one figure)."""
    sums: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for line in lines:
        sums[(line.account, line.entity, line.unit)] += line.quantity
    return dict(sorted(sums.items()))


def render_lines(lines: Sequence[Line], fmt: str, units: str = SI) -> str:
    rows = [_row(line) for line in lines]
    sums = totals(lines)
    if fmt == "json":
        out = [json.dumps({"type": "line", **row}, ensure_ascii=False) for row in rows]
        out += [
            json.dumps(
                {"type": "total", "account": a, "entity": e, "unit": u, "quantity": f"{q:.3f}"},
                ensure_ascii=False,
            )
            for (a, e, u), q in sums.items()
        ]
        return "\n".join(out) + ("\n" if out else "")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "html":
        return _lines_page(lines, units)
    return _table(rows, sums, units)


def _lines_page(lines: Sequence[Line], units: str) -> str:
    """The report page over lines in memory: per hour, account, entity, offering, unit."""
    from metering.html import report_page
    from metering.store.reports import DEFAULT_GROUP, group_columns

    columns = group_columns(DEFAULT_GROUP)
    grouped: dict[tuple[int, tuple[str, ...]], list[Line]] = defaultdict(list)
    for line in lines:
        key = tuple(getattr(line, column) for column in columns)
        grouped[(line.hour, key)].append(line)
    rows = [
        UsageSum(
            period=from_ms(hour),
            group=group,
            unit=members[0].unit,
            quantity=sum((line.quantity for line in members), Decimal(0)),
            lines=len(members),
            # A dry run's hours before the watermark are corrections; negative lines
            # are the ones it can tell from the lines alone.
            corrections=sum(1 for line in members if line.quantity < 0),
        )
        for (hour, group), members in sorted(grouped.items())
    ]
    report = Report(by="hour", columns=columns, rows=rows, units=units)
    return report_page(report, title="metering run --dry-run: the lines a run would write")


def _table(
    rows: list[dict[str, str]], sums: dict[tuple[str, str, str], Decimal], units: str
) -> str:
    if not rows:
        return "no usage lines\n"
    rows = [{c: printable(v) for c, v in r.items()} for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    numeric = {"quantity"}

    def fmt_row(r: dict[str, str]) -> str:
        return "  ".join(
            r[c].rjust(widths[c]) if c in numeric else r[c].ljust(widths[c]) for c in COLUMNS
        ).rstrip()

    out = [fmt_row({c: c for c in COLUMNS}), "  ".join("-" * widths[c] for c in COLUMNS)]
    out += [fmt_row(r) for r in rows]
    out.append("")
    out.append("totals per account and entity:")
    out += [
        "  " + line
        for line in text_table(
            ("account", "entity", "total"),
            [(a, e, amount(q, u, units)) for (a, e, u), q in sums.items()],
            ("total",),
        )
    ]
    return "\n".join(out) + "\n"


# -- shared pieces ------------------------------------------------------------------


def amount(quantity: Decimal, unit: str, units: str = SI) -> str:
    """For people: metering.units.human (CSV and JSON carry the exact quantity)."""
    return human(quantity, unit, units)


def text_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[str] = ()
) -> list[str]:
    """Aligned columns, a rule under the header; numeric columns right-aligned; control
    characters escaped."""
    rows = [[printable(v) for v in r] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    right = {columns.index(c) for c in numeric}

    def fmt_row(r: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(r)
        ).rstrip()

    return [fmt_row(columns), "  ".join("-" * w for w in widths), *(fmt_row(r) for r in rows)]


def _json_lines(objects: Iterable[dict[str, Any]]) -> str:
    out = [json.dumps(o, ensure_ascii=False) for o in objects]
    return "\n".join(out) + ("\n" if out else "")


def _csv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _when(value: datetime | None) -> str:
    return iso(value) or ""


def _duration(ms: int | None) -> str:
    return "" if ms is None else f"{Decimal(ms) / 1000:.3f} s"


# -- metering report ------------------------------------------------------------------

CORRECTION_NOTE = (
    "* corrected: the group includes correction lines (negative amounts, late events "
    "billed after their hour, or backfill differences)"
)


def period_label(period: datetime, by: str) -> str:
    return period.strftime({"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}[by])


def measured(row: UsageSum, columns: Sequence[str]) -> tuple[str, str]:
    """(entity, unit) of a row: what its figure measures. Figures of two of them are
    never added (store.group_columns keeps both in every group)."""
    return row.value(columns, "entity") or "", row.unit


def report_totals(
    rows: Sequence[UsageSum], columns: Sequence[str]
) -> tuple[dict[tuple[str, ...], Decimal], dict[tuple[str, str], Decimal]]:
    """Per group over all periods, and per (entity, unit) over everything."""
    per_group: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    per_measure: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        per_group[row.group] += row.quantity
        per_measure[measured(row, columns)] += row.quantity
    return dict(sorted(per_group.items())), dict(sorted(per_measure.items()))


def render_report(report: Report, fmt: str) -> str:
    if fmt == "html":
        from metering.html import report_page

        return report_page(report)
    columns = report.columns
    unit_at = columns.index("unit")
    split = report.written_after is not None
    per_group, per_measure = report_totals(report.rows, columns)
    if fmt == "json":
        objects: list[dict[str, Any]] = [
            {
                "type": "usage",
                "period": _when(row.period),
                "by": report.by,
                **dict(zip(columns, row.group, strict=True)),
                "quantity": f"{row.quantity:.3f}",
                "lines": row.lines,
                "corrections": row.corrections,
                **({"correction": row.corrections > 0} if split else {}),
            }
            for row in report.rows
        ]
        objects += [
            {"type": "total", **dict(zip(columns, group, strict=True)), "quantity": f"{q:.3f}"}
            for group, q in per_group.items()
        ]
        objects += [
            {"type": "grand_total", "entity": entity, "unit": unit, "quantity": f"{q:.3f}"}
            for (entity, unit), q in per_measure.items()
        ]
        return _json_lines(objects)
    if fmt == "csv":
        return _csv(
            (
                "period",
                *columns,
                "quantity",
                "lines",
                "corrections",
                *(("correction",) if split else ()),
            ),
            (
                (
                    _when(row.period),
                    *row.group,
                    f"{row.quantity:.3f}",
                    str(row.lines),
                    str(row.corrections),
                    *((_yes(row.corrections > 0),) if split else ()),
                )
                for row in report.rows
            ),
        )
    if not report.rows:
        return "no usage lines\n"

    def show(quantity: Decimal, group: Sequence[str]) -> str:
        return amount(quantity, group[unit_at], report.units)

    if split:
        table = [
            (
                period_label(row.period, report.by),
                *row.group,
                show(row.quantity, row.group),
                str(row.lines),
                _yes(row.corrections > 0),
            )
            for row in report.rows
        ]
        head = (report.by, *columns, "quantity", "lines", "correction")
    else:
        table = [
            (
                period_label(row.period, report.by),
                *row.group,
                show(row.quantity, row.group) + (" *" if row.corrections else "  "),
                str(row.lines),
            )
            for row in report.rows
        ]
        head = (report.by, *columns, "quantity", "lines")
    out = text_table(head, table, ("quantity", "lines"))
    out += ["", f"totals per {', '.join(columns)}:"]
    total_rows = [(*group, show(q, group)) for group, q in per_group.items()]
    out += ["  " + line for line in text_table((*columns, "total"), total_rows, ("total",))]
    out += ["", "total per entity and unit:"]
    out += [
        "  " + line
        for line in text_table(
            ("entity", "unit", "total"),
            [(e, u, amount(q, u, report.units)) for (e, u), q in per_measure.items()],
            ("total",),
        )
    ]
    if not split and any(row.corrections for row in report.rows):
        out += ["", CORRECTION_NOTE]
    return "\n".join(out) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- metering runs ----------------------------------------------------------------------


RUN_COLUMNS = (
    "run_id",
    "kind",
    "status",
    "clock",
    "started_at",
    "finished_at",
    "hours_from",
    "hours_to",
    "first_event_id",
    "last_event_id",
    "events_read",
    "lines_written",
    "corrections",
    "rejected",
    "anomalies",
    "duration_ms",
    "host",
)


def _run_object(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "status": run.status,
        "clock": _when(run.clock),
        "started_at": _when(run.started_at),
        "finished_at": _when(run.finished_at),
        "hours_from": _when(run.hours_from) or None,
        "hours_to": _when(run.hours_to) or None,
        "first_event_id": run.first_event_id,
        "last_event_id": run.last_event_id,
        "events_read": run.events_read,
        "lines_written": run.lines_written,
        "corrections": run.corrections,
        "rejected": run.rejected,
        "anomalies": run.anomalies,
        "duration_ms": run.duration_ms,
        "host": run.host,
    }


def _window(run: RunRecord) -> str:
    start = "start" if run.hours_from is None else period_label(run.hours_from, "hour")
    end = "" if run.hours_to is None else period_label(run.hours_to, "hour")
    return f"{start} .. {end}"


def runs_table(runs: Sequence[RunRecord]) -> list[str]:
    numeric = ("events", "lines", "corr", "rej", "anom", "duration")
    rows = [
        (
            run.run_id,
            run.kind,
            run.status,
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _window(run),
            str(run.events_read),
            str(run.lines_written),
            str(run.corrections),
            str(run.rejected),
            str(run.anomalies),
            _duration(run.duration_ms),
        )
        for run in runs
    ]
    columns = ("run_id", "kind", "status", "started", "hours", *numeric)
    return text_table(columns, rows, numeric)


def _csv_of(objects: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The objects of a JSON listing as CSV rows: None empty, booleans true/false."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _csv(columns, ([cell(o[c]) for c in columns] for o in objects))


def render_runs(runs: Sequence[RunRecord], fmt: str) -> str:
    if fmt == "json":
        return _json_lines(_run_object(run) for run in runs)
    if fmt == "csv":
        return _csv_of([_run_object(run) for run in runs], RUN_COLUMNS)
    if not runs:
        return "no runs yet\n"
    return "\n".join(runs_table(runs)) + "\n"


def _line_object(line: LineRow) -> dict[str, Any]:
    return {
        "account": line.account,
        "entity": line.entity,
        "resource_id": line.resource_id,
        "offering": line.offering,
        "unit": line.unit,
        "period_start": _when(line.period_start),
        "quantity": f"{line.quantity:.3f}",
    }


FINDING_COLUMNS = (
    "id",
    "run_id",
    "category",
    "reason",
    "recorded_at",
    "reviewed",
    "event_row_id",
    "event_id",
    "account",
    "entity",
    "resource_id",
    "action",
    "occurred_at",
)


def _finding_object(row: FindingRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "run_id": row.run_id,
        "category": row.category,
        "reason": row.reason,
        "recorded_at": _when(row.recorded_at),
        "reviewed": row.reviewed,
        "event_row_id": row.event_row_id,
        "event_id": row.event_id,
        "account": row.account,
        "entity": row.entity,
        "resource_id": row.resource_id,
        "action": row.action,
        "occurred_at": _when(row.occurred_at) or None,
    }


def render_run_detail(detail: RunDetail, fmt: str, units: str = SI) -> str:
    if fmt == "json":
        return (
            json.dumps(
                {
                    "run": _run_object(detail.run),
                    "totals": [
                        {
                            "account": t.account,
                            "entity": t.entity,
                            "unit": t.unit,
                            "quantity": f"{t.quantity:.3f}",
                            "lines": t.lines,
                        }
                        for t in detail.totals
                    ],
                    "corrections": [_line_object(line) for line in detail.corrections],
                    "corrections_total": detail.corrections_total,
                    "rejected": [_finding_object(row) for row in detail.rejected],
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    run = detail.run
    out = [
        f"run {run.run_id} ({run.kind}, {run.status})",
        f"  clock {_when(run.clock)}, started {_when(run.started_at)}, "
        f"took {_duration(run.duration_ms) or '?'}, host {printable(run.host or '?')}",
        f"  hours {_window(run)}, events read {run.events_read}"
        + (
            f" (ids {run.first_event_id}..{run.last_event_id})"
            if run.first_event_id is not None
            else ""
        ),
        "",
        f"billed: {run.lines_written} lines",
    ]
    if detail.totals:
        rows = [
            (t.account, t.entity, amount(t.quantity, t.unit, units), str(t.lines))
            for t in detail.totals
        ]
        out += [
            "  " + s
            for s in text_table(("account", "entity", "total", "lines"), rows, ("total", "lines"))
        ]
    out += ["", f"corrected: {detail.corrections_total} lines (hours billed before this run)"]
    if detail.corrections:
        lines = [
            (
                period_label(line.period_start, "hour"),
                line.account,
                line.entity,
                line.resource_id,
                line.offering,
                amount(line.quantity, line.unit, units),
            )
            for line in detail.corrections
        ]
        columns = ("hour", "account", "entity", "resource_id", "offering", "quantity")
        out += ["  " + s for s in text_table(columns, lines, ("quantity",))]
        if detail.corrections_total > len(detail.corrections):
            out.append(f"  ... {detail.corrections_total - len(detail.corrections)} more")
    out += ["", f"rejected and anomalies: {run.rejected + run.anomalies}"]
    if detail.rejected:
        out += ["  " + s for s in findings_table(detail.rejected)]
    return "\n".join(out) + "\n"


# -- metering rejected --------------------------------------------------------------------


def findings_table(rows: Sequence[FindingRow]) -> list[str]:
    table = [
        (
            str(row.id),
            row.category,
            row.event_id,
            row.account or "",
            f"{row.entity or ''} {row.resource_id or ''}".strip(),
            row.action or "",
            _when(row.occurred_at),
            row.reason,
            "yes" if row.reviewed else "",
        )
        for row in rows
    ]
    columns = (
        "id",
        "category",
        "event_id",
        "account",
        "resource",
        "action",
        "occurred_at",
        "reason",
        "reviewed",
    )
    return text_table(columns, table, ("id",))


def render_findings(rows: Sequence[FindingRow], fmt: str) -> str:
    if fmt == "json":
        return _json_lines(_finding_object(row) for row in rows)
    if fmt == "csv":
        return _csv_of([_finding_object(row) for row in rows], FINDING_COLUMNS)
    if not rows:
        return "no rejected events or anomalies\n"
    return "\n".join(findings_table(rows)) + "\n"


# -- metering status ----------------------------------------------------------------------


def _dated_object(event: DatedEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event_id": event.event_id,
        "account": event.account,
        "entity": event.entity,
        "resource_id": event.resource_id,
        "occurred_at": None if event.occurred_at is None else _when(from_ms(event.occurred_at)),
    }


def _future_line(status: Status) -> str:
    future = status.future
    assert future is not None
    margin = f"{int(FUTURE_MARGIN.total_seconds()) // 3600} h"
    if not future.count:
        return f"future:        no event dated more than {margin} after now"
    first = future.first[0]
    when = "?" if first.occurred_at is None else _when(from_ms(first.occurred_at))
    return (
        f"future:        {future.count} events dated more than {margin} after now, unbilled "
        f"until then (first: id {first.id}, event_id {printable(first.event_id)}, "
        f"occurred_at {when})"
    )


def _status_object(status: Status) -> dict[str, Any]:
    state, counts = status.state, status.counts
    lag = status.lag
    return {
        "healthy": status.healthy,
        "problems": status.problems,
        "now": _when(status.now),
        "database": status.database,
        "schema": {
            "current": status.schema_current,
            "head": status.schema_head,
            "at_head": status.at_head,
        },
        "watermark": None
        if state is None
        else {
            "billed_until": _when(state.billed_until) or None,
            "last_event_id": state.last_event_id,
            "version": state.version,
            "last_run_id": state.last_run_id,
            "updated_at": _when(state.updated_at) or None,
        },
        "grace_seconds": int(status.grace.total_seconds()),
        "closed_until": _when(status.horizon),
        "lag_seconds": None if lag is None else int(lag.total_seconds()),
        "hours_behind": status.hours_behind,
        "counts": None
        if counts is None
        else {
            "events_unread": max(0, counts.max_event_id - (state.last_event_id if state else 0)),
            "running_resources": counts.running_resources,
            "unreviewed_rejected": counts.unreviewed_rejected,
            "unreviewed_anomalies": counts.unreviewed_anomalies,
            "gaps": counts.gaps,
            "gap_ids": counts.gap_ids,
            "oldest_gap_seen_at": _when(counts.oldest_gap_seen_at) or None,
            "pending_measure_parts": counts.pending_parts,
        },
        "future_events": None
        if status.future is None
        else {
            "after": _when(status.future_after),
            "count": status.future.count,
            "first": _dated_object(status.future.first[0]) if status.future.first else None,
        },
        "last_runs": [_run_object(run) for run in status.runs],
        "events_table": None if status.events is None else _events_object(status.events),
    }


def _events_object(events: EventsTable) -> dict[str, Any]:
    return {
        "rows": events.rows,
        "rows_estimated": events.rows_estimated,
        "size_bytes": events.size_bytes,
        "size_of": events.size_of,
        "first_id": events.first_id,
        "first_occurred_at": _when(events.first_occurred_at) or None,
        "pruned_before": _when(events.pruned_before) or None,
    }


def _events_lines(events: EventsTable | None) -> list[str]:
    if events is None:
        return []
    rows = f"~{events.rows} rows (estimate)" if events.rows_estimated else f"{events.rows} rows"
    size = "" if events.size_bytes is None else f", {_bytes(events.size_bytes)} ({events.size_of})"
    first = (
        "empty"
        if events.first_id is None
        else f"first row id {events.first_id}, occurred {_when(events.first_occurred_at)}"
    )
    pruned = _when(events.pruned_before) if events.pruned_before else "never pruned"
    return [f"events table:  {rows}{size}", f"               {first}; pruned before: {pruned}"]


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            tenths = size * 10 // scale
            return f"{tenths // 10}.{tenths % 10} {unit}"
    return f"{size} B"


def render_status(status: Status, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(_status_object(status), ensure_ascii=False) + "\n"
    head = "at head" if status.at_head else f"head is {status.schema_head}"
    out = [
        f"database:      {status.database}",
        f"schema:        {status.schema_current or 'empty (never migrated)'} ({head})",
    ]
    state, counts = status.state, status.counts
    if state is not None and counts is not None:
        billed = _when(state.billed_until) or "nothing billed yet"
        behind = status.hours_behind
        out += [
            f"billed until:  {billed}"
            + (
                ""
                if behind is None
                else f" ({behind} closed hours behind, now {_when(status.now)})"
            ),
            f"last event id: {state.last_event_id} "
            f"({max(0, counts.max_event_id - state.last_event_id)} events not read yet)",
            f"running:       {counts.running_resources} resources",
            f"unreviewed:    {counts.unreviewed_rejected} rejected events, "
            f"{counts.unreviewed_anomalies} anomalies (metering rejected)",
            f"pending:       {counts.gaps} id gaps ({counts.gap_ids} ids)"
            + (
                f" (oldest seen {_when(counts.oldest_gap_seen_at)})"
                if counts.oldest_gap_seen_at
                else ""
            )
            + f", {counts.pending_parts} measure parts of open hours",
            _future_line(status),
            *_events_lines(status.events),
            "",
        ]
        if status.runs:
            out += ["last runs:", *("  " + s for s in runs_table(status.runs))]
        else:
            out.append("last runs:     none yet")
    problems = status.problems
    out += ["", "health:        " + ("ok" if not problems else "FAILING")]
    out += [f"  - {problem}" for problem in problems]
    return "\n".join(out) + "\n"
