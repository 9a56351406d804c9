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
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from metering.report import Report, RunDetail
from metering.status import FUTURE_MARGIN, Status
from metering.store.events import DatedEvent
from metering.store.reports import FindingRow, LineRow, UsageSum
from metering.store.runs import RunRecord
from metering.store.usage import SECOND, Line
from metering.timeutil import from_ms, iso

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


def totals(lines: Sequence[Line]) -> dict[tuple[str, str], Decimal]:
    """Per (account, unit): the sum of quantities."""
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in lines:
        sums[(line.account, line.unit)] += line.quantity
    return dict(sorted(sums.items()))


def render_lines(lines: Sequence[Line], fmt: str) -> str:
    rows = [_row(line) for line in lines]
    sums = totals(lines)
    if fmt == "json":
        out = [json.dumps({"type": "line", **row}, ensure_ascii=False) for row in rows]
        out += [
            json.dumps({"type": "total", "account": a, "unit": u, "quantity": f"{q:.3f}"})
            for (a, u), q in sums.items()
        ]
        return "\n".join(out) + ("\n" if out else "")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "html":
        return _lines_page(lines)
    return _table(rows, sums)


def _lines_page(lines: Sequence[Line]) -> str:
    """The report page (chart per account, table per resource) over lines in memory."""
    from metering.html import report_page
    from metering.report import Report
    from metering.store.reports import UsageSum

    def sums(key: Callable[[Line], tuple[str, ...]]) -> list[UsageSum]:
        grouped: dict[tuple[int, tuple[str, ...], str], list[Line]] = defaultdict(list)
        for line in lines:
            grouped[(line.hour, key(line), line.unit)].append(line)
        return [
            UsageSum(
                period=from_ms(hour),
                group=group,
                unit=unit,
                quantity=sum((line.quantity for line in members), Decimal(0)),
                lines=len(members),
                corrections=sum(1 for line in members if line.quantity < 0),
            )
            for (hour, group, unit), members in sorted(grouped.items())
        ]

    report = Report(
        by="hour",
        group="resource",
        rows=sums(lambda line: (line.account, line.entity, line.resource_id)),
        by_account=sums(lambda line: (line.account,)),
    )
    return report_page(report, title="metering run --dry-run: the lines a run would write")


def _table(rows: list[dict[str, str]], sums: dict[tuple[str, str], Decimal]) -> str:
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
    out.append("totals per account:")
    for (account, unit), quantity in sums.items():
        out.append(f"  {printable(account)}  {amount(quantity, unit)}")
    return "\n".join(out) + "\n"


# -- shared pieces ------------------------------------------------------------------


def running_time(seconds: Decimal) -> str:
    """'5400.000 s (1 h 30 min)': seconds exact, hours and whole minutes (rounded down)."""
    sign = "-" if seconds < 0 else ""
    minutes = int(abs(seconds)) // 60
    return f"{seconds:.3f} s ({sign}{minutes // 60} h {minutes % 60:02d} min)"


def amount(quantity: Decimal, unit: str) -> str:
    if unit == SECOND:
        return running_time(quantity)
    return f"{quantity:.3f} {unit}"


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


def report_totals(
    rows: Sequence[UsageSum],
) -> tuple[dict[tuple[tuple[str, ...], str], Decimal], dict[str, Decimal]]:
    """Per (group, unit) over all periods, and per unit over everything."""
    per_group: dict[tuple[tuple[str, ...], str], Decimal] = defaultdict(Decimal)
    per_unit: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        per_group[(row.group, row.unit)] += row.quantity
        per_unit[row.unit] += row.quantity
    return dict(sorted(per_group.items())), dict(sorted(per_unit.items()))


def render_report(report: Report, fmt: str) -> str:
    if fmt == "html":
        from metering.html import report_page

        return report_page(report)
    columns = report.columns
    per_group, per_unit = report_totals(report.rows)
    if fmt == "json":
        objects: list[dict[str, Any]] = [
            {
                "type": "usage",
                "period": _when(row.period),
                "by": report.by,
                **dict(zip(columns, row.group, strict=True)),
                "unit": row.unit,
                "quantity": f"{row.quantity:.3f}",
                "lines": row.lines,
                "corrections": row.corrections,
            }
            for row in report.rows
        ]
        objects += [
            {
                "type": "total",
                **dict(zip(columns, group, strict=True)),
                "unit": unit,
                "quantity": f"{q:.3f}",
            }
            for (group, unit), q in per_group.items()
        ]
        objects += [
            {"type": "grand_total", "unit": unit, "quantity": f"{q:.3f}"}
            for unit, q in per_unit.items()
        ]
        return _json_lines(objects)
    if fmt == "csv":
        return _csv(
            ("period", *columns, "unit", "quantity", "lines", "corrections"),
            (
                (
                    _when(row.period),
                    *row.group,
                    row.unit,
                    f"{row.quantity:.3f}",
                    str(row.lines),
                    str(row.corrections),
                )
                for row in report.rows
            ),
        )
    if not report.rows:
        return "no usage lines\n"
    table = [
        (
            period_label(row.period, report.by),
            *row.group,
            row.unit,
            amount(row.quantity, row.unit) + (" *" if row.corrections else "  "),
            str(row.lines),
        )
        for row in report.rows
    ]
    out = text_table(
        (report.by, *columns, "unit", "quantity", "lines"), table, ("quantity", "lines")
    )
    out += ["", f"totals per {report.group}:"]
    total_rows = [(*group, amount(q, unit)) for (group, unit), q in per_group.items()]
    out += ["  " + line for line in text_table((*columns, "total"), total_rows, ("total",))]
    out += ["", "total:"]
    out += [f"  {amount(q, unit)}" for unit, q in per_unit.items()]
    if any(row.corrections for row in report.rows):
        out += ["", CORRECTION_NOTE]
    return "\n".join(out) + "\n"


# -- metering runs ----------------------------------------------------------------------


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


def render_runs(runs: Sequence[RunRecord], fmt: str) -> str:
    if fmt == "json":
        return _json_lines(_run_object(run) for run in runs)
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


def render_run_detail(detail: RunDetail, fmt: str) -> str:
    if fmt == "json":
        return (
            json.dumps(
                {
                    "run": _run_object(detail.run),
                    "totals": [
                        {
                            "account": t.account,
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
        rows = [(t.account, amount(t.quantity, t.unit), str(t.lines)) for t in detail.totals]
        out += [
            "  " + s for s in text_table(("account", "total", "lines"), rows, ("total", "lines"))
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
                amount(line.quantity, line.unit),
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
    }


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
            f"pending:       {counts.gaps} id gaps"
            + (
                f" (oldest seen {_when(counts.oldest_gap_seen_at)})"
                if counts.oldest_gap_seen_at
                else ""
            )
            + f", {counts.pending_parts} measure parts of open hours",
            _future_line(status),
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
